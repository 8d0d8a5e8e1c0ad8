"""The Dagster UI end to end: `dagster dev` on a demo-like home, a run launched through GraphQL,
and the pages an operator reads, rendered by Debian's Chromium (driven by Playwright).

Screenshots are kept in `test-artifacts/ui/` at the repository root (gitignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from connectome_assets.connectome.catalog import write_entry
from connectome_assets.demo import write_demo_release
from connectome_assets.settings import Settings, load_settings

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
LOCATION, REPOSITORY = "connectome_assets", "__repository__"
DATASET = "witvliet2021-adult"  # the smaller demo dataset
# Generous caps for a loaded 2-core machine; the test waits for states, never for a fixed time.
SERVER_START_SECONDS = 300
RUN_SECONDS = 600
PAGE_MS = 120_000


def require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test`, which installs Debian's chromium (apt-get install chromium)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, seconds: float, probe: Callable[[], Any], log: Path) -> Any:
    """Poll `probe` until it returns something truthy; after `seconds`, fail naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s; dagster dev log:\n{tail(log)}")
        time.sleep(0.5)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextmanager
def dagster_dev(settings: Settings, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster dev` on 127.0.0.1 with the home's instance, as `make dev` starts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOME_")}
    env.update(CONNECTOME_HOME=str(settings.home), DAGSTER_HOME=str(settings.dagster_home))
    dagster = Path(sys.executable).parent / "dagster"
    # env --default-signal: a background job starts with SIGINT ignored, and dagster dev stops on it.
    command = ["env", "--default-signal=INT,TERM", str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: dagster dev, the webserver, the daemon, the code server
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class GraphQL:
    def __init__(self, base: str, log: Path) -> None:
        self.url, self.log = f"{base}/graphql", log

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, f"GraphQL errors: {answer['errors']}"
        return answer["data"]

    def server_up(self, process: subprocess.Popen) -> bool:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}; its log:\n{tail(self.log)}")
        try:
            with urllib.request.urlopen(self.url.replace("/graphql", "/server_info"), timeout=10) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def location_loaded(self) -> bool:
        entries = self("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }")
        for entry in entries["workspaceOrError"]["locationEntries"]:
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                assert loaded["__typename"] == "RepositoryLocation", f"code location {LOCATION} failed to load: {loaded.get('message')}"
                return True
        return False

    def stop_sensor(self, name: str) -> None:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        sensor = self("query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id } } }", s=selector)["sensorOrError"]
        stopped = self(
            "mutation($id: String) { stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } } }", id=sensor["id"]
        )["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped

    def add_partition(self, partitions: str, key: str) -> None:
        added = self(
            "mutation($r: RepositorySelector!, $p: String!, $k: String!) { addDynamicPartition(repositorySelector: $r, partitionsDefName: $p, partitionKey: $k) { __typename } }",
            r={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
            p=partitions,
            k=key,
        )["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added

    def launch_partition_run(self, job: str, partition: str) -> str:
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            # One process for the whole run: a subprocess per step costs ~8 s of start-up each here.
            "runConfigData": {"execution": {"config": {"in_process": {}}}},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        }
        launched = self(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            p=params,
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def finished_status(self, run_id: str) -> str | None:
        status = self("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id)["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


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


def test_dagster_ui_shows_the_partitioned_import_its_checks_and_its_success(tmp_path: Path) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect

    settings = load_settings({"CONNECTOME_HOME": str(tmp_path / "home")})
    settings.dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", settings.dagster_home / "dagster.yaml")
    entry = write_demo_release(settings, DATASET)
    log = tmp_path / "dagster-dev.log"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with dagster_dev(settings, port, log) as process:
        graphql = GraphQL(base, log)
        wait_for("the webserver answering", SERVER_START_SECONDS, lambda: graphql.server_up(process), log)
        wait_for(f"code location {LOCATION} loading", SERVER_START_SECONDS, graphql.location_loaded, log)
        graphql("mutation { setNuxSeen }")  # else a welcome modal covers the pages
        # The catalog sensor would launch its own run for the new entry; this run is launched by hand.
        graphql.stop_sensor("dataset_catalog_sensor")
        write_entry(settings.catalog, entry)
        graphql.add_partition("datasets", DATASET)
        run_id = graphql.launch_partition_run("dataset_import", DATASET)
        status = wait_for(f"run {run_id} finishing", RUN_SECONDS, lambda: graphql.finished_status(run_id), log)
        assert status == "SUCCESS", f"run {run_id} ended {status}; dagster dev log:\n{tail(log)}"

        with chromium_page(chromium) as page:
            # The connectome group's lineage: each asset with its checks' state, and the assets downstream.
            page.goto(f"{base}/locations/{LOCATION}/asset-groups/connectome/lineage")
            expect(page.get_by_text("2 / 2 Passed")).to_have_count(2)  # neurons' and synapses' checks
            for asset in ("dataset_sources", "neurons", "synapses", "graph_edges", "bottleneck_neurons", "feature_exports"):
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            screenshot(page, "asset-lineage")

            # The run: its success, and every check it evaluated, by name.
            page.goto(f"{base}/runs/{run_id}?logs=type:ASSET_CHECK_EVALUATION")
            for asset, check in (
                ("neurons", "neuron_ids_unique"),
                ("neurons", "table_state_consistent"),
                ("synapses", "endpoint_integrity"),
                ("synapses", "table_state_consistent"),
                ("bottleneck_neurons", "graph_products_present"),
                ("feature_exports", "export_row_counts"),
            ):
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
