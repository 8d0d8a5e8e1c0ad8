"""The automation daemon, ticked by hand: the sensors and the automation evaluation on one
instance, keeping their cursors, and the requested runs executed in-process as the daemon's run
would execute them (`run_dataset_selection`)."""

from __future__ import annotations

import datetime
import warnings

import dagster as dg

# Dagster 1.13 does not export `observe` at the top level; it is the in-process observation run.
from dagster._core.definitions.observe import observe as observe_in_process
from dagster._core.definitions.partitions.context import partition_loading_context

from connectome_assets.cli import dagster_instance, run_dataset_selection
from connectome_assets.definitions import build_definitions
from connectome_assets.defs.connectome.assets import dataset_sources
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor, flight_upload_sensor
from connectome_assets.defs.resources import CatalogResource, MetadataResource
from connectome_assets.settings import Settings


class Daemon:
    """Ticks the dataset sensors and the automation evaluation on one instance, keeping their cursors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.defs = build_definitions(settings)
        self.instance = dagster_instance(settings)
        self.resources = {"catalog": CatalogResource(path=str(settings.catalog)), "metadata": MetadataResource(url=settings.metadata_url)}
        self.sensor_cursors: dict[str, str | None] = {}
        self.automation_cursor = None
        # The automation's clock, moved by the test: the source observation is on a cron.
        self.now = datetime.datetime(2026, 11, 21, 12, 1, tzinfo=datetime.timezone.utc)

    def sensor_tick(self, sensor: dg.SensorDefinition) -> dg.SensorResult:
        """One tick of a sensor, its partition requests and events applied as the daemon would."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.sensor_cursors.get(sensor.name), resources=self.resources)
        result = sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.sensor_cursors[sensor.name] = result.cursor
        return result

    def catalog_tick(self) -> dg.SensorResult:
        return self.sensor_tick(dataset_catalog_sensor)

    def flight_tick(self) -> dg.SensorResult:
        return self.sensor_tick(flight_upload_sensor)

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
        result = observe_in_process([dataset_sources], instance=self.instance, resources=self.resources)
        assert result.success

    def run(self, dataset: str, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        result = run_dataset_selection(self.settings, dataset, selection)
        assert result.success
        return result


def run_requested(daemon: Daemon, requested: dict[str, set[str]], dataset: str) -> dg.ExecuteInProcessResult:
    """What the daemon's run for `dataset` executes: the requested assets with the requested checks."""
    assets = [name for name, partitions in requested.items() if "/" not in name and dataset in partitions]
    assert assets, f"nothing requested for {dataset}"
    checks = [dg.AssetCheckKey(dg.AssetKey(name.split("/")[0]), name.split("/")[1]) for name, partitions in requested.items() if "/" in name and dataset in partitions]
    return daemon.run(dataset, dg.AssetSelection.assets(*assets).without_checks() | dg.AssetSelection.checks(*checks))
