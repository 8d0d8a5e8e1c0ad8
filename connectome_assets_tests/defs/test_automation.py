"""Declarative automation as the daemon evaluates it: what each tick requests, for which partition.

The requested assets and checks are executed in-process as the daemon's run would execute them
(`run_dataset_selection`), against chDB and the metadata database.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path

import dagster as dg
import pytest

# Dagster 1.13 does not export `observe` at the top level; it is the in-process observation run.
from dagster._core.definitions.observe import observe as observe_in_process
from dagster._core.definitions.partitions.context import partition_loading_context

from connectome_assets.cli import dagster_instance, materialize_dataset, register_dataset, run_dataset_selection
from connectome_assets.connectome.catalog import write_entry
from connectome_assets.definitions import build_definitions
from connectome_assets.defs.connectome.assets import dataset_sources
from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor
from connectome_assets.defs.resources import CatalogResource
from connectome_assets.settings import Settings
from connectome_assets.warehouse.exports import export_root
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.releases import entry, write_release

BODIES = [10, 20, 30]
EDGES = [(10, 20, 3), (20, 30, 1), (30, 99, 2)]
WHOLE_LINEAGE = {*DATASET_IMPORT_ASSETS, *(f"{asset}/{check}" for asset, check in MAIN_JOB_CHECKS)}


class Daemon:
    """Ticks the catalog sensor and the automation evaluation on one instance, keeping their cursors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.defs = build_definitions(settings)
        self.instance = dagster_instance(settings)
        self.sensor_cursor: str | None = None
        self.automation_cursor = None
        # The automation's clock, moved by the test: the source observation is on a cron.
        self.now = datetime.datetime(2026, 11, 21, 12, 1, tzinfo=datetime.timezone.utc)

    def catalog_tick(self) -> None:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.sensor_cursor, resources={"catalog": CatalogResource(path=str(self.settings.catalog))})
        result = dataset_catalog_sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.sensor_cursor = result.cursor

    def automation_tick(self) -> dict[str, set[str]]:
        """Asset or `asset/check` -> the partitions this tick requests; the clock moves 30 s a tick."""
        self.now += datetime.timedelta(seconds=30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.automation_cursor, evaluation_time=self.now)
        self.automation_cursor = result.cursor
        requested: dict[str, set[str]] = {}
        # The result's public getters cover assets only; checks are read from each evaluation's
        # subset, which needs the evaluation's partition context (dynamic partitions).
        with partition_loading_context(new_ctx=result._partition_loading_context):
            for evaluation in result.results:
                partitions = evaluation.true_subset.expensively_compute_partition_keys()
                if partitions:
                    key = evaluation.key
                    name = f"{key.asset_key.to_user_string()}/{key.name}" if isinstance(key, dg.AssetCheckKey) else key.to_user_string()
                    requested[name] = set(partitions)
        return requested

    def observe_sources(self) -> None:
        result = observe_in_process([dataset_sources], instance=self.instance, resources={"catalog": CatalogResource(path=str(self.settings.catalog))})
        assert result.success

    def run(self, dataset: str, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        result = run_dataset_selection(self.settings, dataset, selection)
        assert result.success
        return result


def run_requested(daemon: Daemon, requested: dict[str, set[str]], dataset: str) -> None:
    """What the daemon's run for `dataset` executes: the requested assets with the requested checks."""
    assets = [name for name, partitions in requested.items() if "/" not in name and dataset in partitions]
    assert assets, f"nothing requested for {dataset}"
    checks = [dg.AssetCheckKey(dg.AssetKey(name.split("/")[0]), name.split("/")[1]) for name, partitions in requested.items() if "/" in name and dataset in partitions]
    daemon.run(dataset, dg.AssetSelection.assets(*assets).without_checks() | dg.AssetSelection.checks(*checks))


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
    for sensor in (automation_sensor, dataset_catalog_sensor, dvid_export_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
