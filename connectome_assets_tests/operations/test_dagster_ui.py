"""The Dagster UI end to end: the shared `dagster dev`, a demo dataset's run launched through GraphQL,
and the pages an operator reads, rendered by Debian's Chromium (driven by Playwright).

Screenshots are kept in `test-artifacts/ui/` at the repository root (gitignored).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from connectome_assets.cli import register_dataset
from connectome_assets.demo import write_demo_release
from connectome_assets.orchestration import LOCATION
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.operations.conftest import DagsterDev

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dagster_dev")]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
# Flags that work on a container without a GPU, a sandbox or outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DATASET = "witvliet2021-adult"  # the smaller demo dataset
# Generous caps for a loaded 2-core machine; the test waits for states, never for a fixed time.
RUN_SECONDS = 600
PAGE_MS = 120_000
# One process for the whole run: a subprocess per step costs ~8 s of start-up each here.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test`, which installs Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@contextmanager
def chromium_page(executable: Path) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_MS)  # assertions wait for the page as long as actions do
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh temporary --user-data-dir.
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(PAGE_MS)
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_dagster_ui_shows_the_partitioned_import_its_checks_and_its_success(dagster_dev: DagsterDev) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect

    settings, webserver = dagster_dev.settings, dagster_dev.webserver
    base = webserver.url
    register_dataset(settings, write_demo_release(settings, DATASET))  # catalog entry and partition
    run_id = webserver.launch_run("dataset_import", DATASET, run_config=IN_PROCESS)
    status = webserver.wait_for_run(run_id, timeout_seconds=RUN_SECONDS)
    assert status == "SUCCESS", f"run {run_id} ended {status}; dagster dev log:\n{dagster_dev.log.read_text()[-3000:]}"

    with chromium_page(chromium) as page:
        # The connectome group's lineage: each asset with its checks' state, and the assets downstream.
        page.goto(f"{base}/locations/{LOCATION}/asset-groups/connectome/lineage")
        expect(page.get_by_text("2 / 2 Passed")).to_have_count(2)  # neurons' and synapses' checks
        for asset in ("dataset_sources", "neurons", "synapses", "graph_edges", "bottleneck_neurons", "feature_exports"):
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        screenshot(page, "asset-lineage")

        # The run: its success, and every check it evaluated, by name.
        page.goto(f"{base}/runs/{run_id}?logs=type:ASSET_CHECK_EVALUATION")
        for asset, check in MAIN_JOB_CHECKS:
            expect(page.get_by_text(f"Check {check} succeeded for materialization of {asset}.")).to_be_visible()
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        expect(page.get_by_text(f"partition: {DATASET}")).to_be_visible()
        expect(page.get_by_text("6 assets")).to_be_visible()
        expect(page.get_by_text("6 checks")).to_be_visible()
        screenshot(page, "run-checks")

        # The run log holds the import's progress line, as a person reads it.
        page.goto(f"{base}/runs/{run_id}?logs={urllib.parse.quote('synapses: done')}")
        expect(page.get_by_text(re.compile(rf"^{DATASET} synapses: done, 1 batches, \S+ k rows in \d+ s, \S+( [kM])? rows/s$"))).to_be_visible()
        screenshot(page, "run-progress")
