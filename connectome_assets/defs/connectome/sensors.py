"""`dataset_catalog_sensor`: a new catalog entry becomes a partition; a new or edited one a new
observation of its `dataset_sources`. `flight_upload_sensor`: a completed Flight upload of a
`flight` dataset's table becomes a new observation of its `dataset_sources` (the Flight server
itself knows nothing of Dagster). Automation (defs/automation.py) then materializes what that
requires: the whole lineage of a new dataset, everything below a changed one.

The catalog sensor's cursor maps each dataset name to the digest of its entry file, so a tick reports only entries
that are new or changed since the last tick. An entry that does not resolve is reported and
retried on the next tick (its digest is not recorded). The Flight upload sensor's cursor maps each
flight dataset to its sources version.
"""


import json

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from connectome_assets.connectome.errors import SourceError
from connectome_assets.defs.automation import SENSOR_STATUS
from connectome_assets.defs.connectome.assets import sources_observation
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.resources import CatalogResource, MetadataResource


@dg.sensor(minimum_interval_seconds=30, default_status=SENSOR_STATUS)
def dataset_catalog_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource, metadata: MetadataResource) -> dg.SensorResult:
    """Adds a `datasets` partition for each new catalog entry and observes the sources of each new or edited one."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    new_partitions: list[str] = []
    observations: list[dg.AssetObservation] = []
    problems: list[str] = []
    existing = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
    state = metadata.get_store()
    for name in catalog.names():
        digest = catalog.digest(name)
        if seen.get(name) == digest:
            current[name] = digest
            continue
        try:
            observation = sources_observation(catalog, state, name)
        except SourceError as exc:
            problems.append(str(exc))
            if name in seen:
                current[name] = seen[name]
            continue
        current[name] = digest
        if name not in existing:
            new_partitions.append(name)
        observations.append(observation)
    for problem in problems:
        context.log.warning(problem)
    cursor = json.dumps(current, sort_keys=True)
    if not observations:
        reason = "; ".join(problems) if problems else "no new or changed catalog entries"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(
        asset_events=observations,
        dynamic_partitions_requests=[datasets_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=cursor,
    )


@dg.sensor(minimum_interval_seconds=30, default_status=SENSOR_STATUS)
def flight_upload_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource, metadata: MetadataResource) -> dg.SensorResult:
    """Observes the sources of each `flight` dataset whose neurons or synapses completed a Flight upload
    since the last tick, so automation records the upload and builds everything below it."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    observations: list[dg.AssetObservation] = []
    state = metadata.get_store()
    for name in context.instance.get_dynamic_partitions(datasets_partitions.name):
        try:
            if not catalog.entry(name).source_model().received_tables:
                continue
            observation = sources_observation(catalog, state, name)
        except SourceError as exc:
            context.log.warning(str(exc))  # the catalog sensor reports entries that do not resolve
            if name in seen:
                current[name] = seen[name]
            continue
        current[name] = observation.tags[DATA_VERSION_TAG]
        if seen.get(name) != current[name]:
            observations.append(observation)
    cursor = json.dumps(current, sort_keys=True)
    if not observations:
        return dg.SensorResult(skip_reason=dg.SkipReason("no Flight upload completed since the last tick"), cursor=cursor)
    return dg.SensorResult(asset_events=observations, cursor=cursor)
