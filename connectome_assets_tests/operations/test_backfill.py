"""Backfills over several dataset partitions, through the webserver's GraphQL API and through
`connectome backfill`, executed by the real daemon of a real `dagster dev`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from connectome_assets.cli import register_dataset
from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.operations.conftest import DagsterDev
from connectome_assets_tests.releases import entry, write_release

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dagster_dev")]

BODIES = [10, 20, 30]
EDGES = [(10, 20, 3), (20, 30, 1), (30, 99, 2)]
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def register(dagster_dev: DagsterDev, names: list[str], tmp_path: Path) -> None:
    for name in names:
        register_dataset(dagster_dev.settings, entry(name, write_release(tmp_path / name, BODIES, EDGES)))


def check_results(dagster_dev: DagsterDev, run_id: str) -> list[bool]:
    with dg.DagsterInstance.from_config(str(dagster_dev.settings.dagster_home)) as instance:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        return [event.dagster_event.event_specific_data.passed for event in events]


def test_graphql_backfill_over_two_datasets_runs_each_with_its_checks(dagster_dev: DagsterDev, tmp_path: Path) -> None:
    register(dagster_dev, ["bf_a", "bf_b"], tmp_path)
    webserver = dagster_dev.webserver
    backfill_id = webserver.launch_backfill(DATASET_IMPORT_ASSETS, ["bf_a", "bf_b"], title="two datasets", run_config=IN_PROCESS)
    lines: list[str] = []
    state = webserver.wait_for_backfill(backfill_id, lines.append, timeout_seconds=900)
    assert state.succeeded, (lines, dagster_dev.log.read_text()[-3000:])
    assert sorted(run.partition for run in state.runs) == ["bf_a", "bf_b"]
    for run in state.runs:
        assert check_results(dagster_dev, run.run_id) == [True] * len(MAIN_JOB_CHECKS)
    assert lines[-1] == f"backfill {backfill_id}: {state.status}, 2 of 2 partitions succeeded (bf_a, bf_b)"


def test_cli_backfill_waits_for_its_runs_and_names_unknown_datasets(dagster_dev: DagsterDev, tmp_path: Path) -> None:
    register(dagster_dev, ["bf_cli"], tmp_path)
    connectome = [str(Path(sys.executable).parent / "connectome"), "backfill", "--url", dagster_dev.webserver.url]
    unknown = subprocess.run([*connectome, "bf_cli", "no_such_dataset"], env=dagster_dev.env, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "connectome: unknown partitions no_such_dataset: the sensors add one per catalog entry or DVID export"

    # Two assets, not the whole lineage (the GraphQL test runs that): each step of the default
    # multiprocess executor is a process that imports the code location.
    done = subprocess.run([*connectome, "bf_cli", "--assets", "neurons", "synapses", "--wait"], env=dagster_dev.env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith("1 of 1 partitions succeeded (bf_cli)")
    assert "/runs/b/" in done.stdout and ": bf_cli x neurons, synapses" in done.stdout.splitlines()[0]
