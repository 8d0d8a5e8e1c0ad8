"""Declarative automation as the daemon evaluates it: what each tick requests, for which partition.

The requested assets and checks are executed in-process as the daemon's run would execute them
(`run_dataset_selection`), against chDB and the metadata database.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from connectome_assets.cli import materialize_dataset, register_dataset, run_dataset_selection
from connectome_assets.connectome.catalog import write_entry
from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor, flight_upload_sensor
from connectome_assets.settings import Settings
from connectome_assets.warehouse.exports import export_root
from connectome_assets_tests.daemon import Daemon, run_requested
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.releases import entry, write_release

BODIES = [10, 20, 30]
EDGES = [(10, 20, 3), (20, 30, 1), (30, 99, 2)]
WHOLE_LINEAGE = {*DATASET_IMPORT_ASSETS, *(f"{asset}/{check}" for asset, check in MAIN_JOB_CHECKS)}


@pytest.mark.slow
@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_new_dataset_flows_through_and_a_changed_source_rematerializes_only_its_lineage(settings: Settings, tmp_path: Path) -> None:
    releases = {name: write_release(tmp_path / name, BODIES, EDGES) for name in ("worm_a", "worm_b")}
    for name, release in releases.items():
        write_entry(settings.catalog, entry(name, release))
    daemon = Daemon(settings)

    assert daemon.automation_tick() == {}  # nothing discovered yet (and a first evaluation requests nothing)
    daemon.catalog_tick()
    first = daemon.automation_tick()
    # The whole main lineage of both new datasets, with every blocking check, in one tick; never
    # the on-demand article cache.
    assert first == {name: {"worm_a", "worm_b"} for name in WHOLE_LINEAGE}
    run_requested(daemon, first, "worm_a")
    # Handled: nothing is requested twice, not even worm_b whose run has not happened (a daemon
    # would have launched it; its run is left out here to keep the test short).
    assert daemon.automation_tick() == {}

    # A source file of worm_a changes: the scheduled observation sees a new data version, and the
    # whole lineage below it is requested again, for worm_a only.
    weights = Path(releases["worm_a"]["weights"])
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
    daemon.observe_sources()
    changed = daemon.automation_tick()
    assert changed == {name: {"worm_a"} for name in WHOLE_LINEAGE}
    run_requested(daemon, changed, "worm_a")
    assert daemon.automation_tick() == {}

    # An observation that finds nothing changed requests nothing.
    daemon.observe_sources()
    assert daemon.automation_tick() == {}

    # The sources are observed on each tick of their cron, every partition at once.
    assert daemon.now.minute < 9
    daemon.now = daemon.now.replace(minute=9, second=59)  # the next tick passes 12:10
    assert daemon.automation_tick() == {"dataset_sources": {"worm_a", "worm_b"}}
    assert daemon.automation_tick() == {}


@pytest.mark.slow
@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_nothing_is_built_on_a_parent_whose_blocking_check_failed(settings: Settings, tmp_path: Path) -> None:
    write_entry(settings.catalog, entry("worm", write_release(tmp_path / "worm", BODIES, EDGES)))
    daemon = Daemon(settings)
    # The first evaluation of a condition requests nothing (Dagster's rule, so that switching
    # automation on does not rebuild everything); the daemon was running before the entry came.
    assert daemon.automation_tick() == {}
    daemon.catalog_tick()
    run_requested(daemon, daemon.automation_tick(), "worm")
    assert daemon.automation_tick() == {}

    # By hand, outside automation: feature_exports re-materialized without its check, then one of
    # its files lost, then the check run alone fails.
    daemon.run("worm", dg.AssetSelection.assets("feature_exports").without_checks())
    exported = sorted(Path(export_root(settings.object_store, "worm", _graph_version(settings))[len("file://") :]).glob("synapses*.parquet"))
    assert exported
    for path in exported:
        path.unlink()
    check = dg.AssetCheckKey(dg.AssetKey("feature_exports"), "export_row_counts")
    result = run_dataset_selection(settings, "worm", dg.AssetSelection.checks(check))
    assert [e.passed for e in result.get_asset_check_evaluations()] == [False]

    # registry_entries' parent was updated, but its blocking check failed: nothing is requested.
    assert daemon.automation_tick() == {}

    # Re-exported with its check passing: now the registry entries follow.
    daemon.run("worm", dg.AssetSelection.assets("feature_exports"))
    assert daemon.automation_tick() == {"registry_entries": {"worm"}}


def _graph_version(settings: Settings) -> str:
    from connectome_assets.graph.status import graph_source_version
    from connectome_assets.metadata.store import MetadataStore

    store = MetadataStore(settings.metadata_url)
    try:
        return graph_source_version(store, store.dataset_id("worm"))
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_a_dataset_added_and_imported_by_hand_is_not_imported_again_when_the_sensor_looks(settings: Settings, tmp_path: Path) -> None:
    daemon = Daemon(settings)
    assert daemon.automation_tick() == {}
    # `connectome dataset add` then `connectome materialize` (as `make demo` does), with no daemon
    # running; the sensor's first look later finds the same sources version the CLI observed.
    register_dataset(settings, entry("worm", write_release(tmp_path / "worm", BODIES, EDGES)))
    assert materialize_dataset(settings, "worm").ok
    daemon.catalog_tick()
    assert daemon.automation_tick() == {}


def test_sensors_and_automation_start_running_unless_the_deployment_switches_them_off() -> None:
    from connectome_assets.defs.automation import automation_sensor
    from connectome_assets.defs.volumes.sensors import dvid_export_sensor

    assert os.environ.get("CONNECTOME_AUTOMATION") is None  # the default; `off` is tested on a real dagster dev (tests/operations)
    for sensor in (automation_sensor, dataset_catalog_sensor, flight_upload_sensor, dvid_export_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
