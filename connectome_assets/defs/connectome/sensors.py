"""`dataset_catalog_sensor`: a new catalog entry becomes a partition and a run; an edited one a run.

The cursor maps each dataset name to the digest of its entry file, so a tick requests work only
for entries that are new or changed since the last tick. An entry that does not parse is
reported and retried on the next tick (its digest is not recorded).
"""


import json

import dagster as dg

from connectome_assets.connectome.errors import SourceError
from connectome_assets.defs.connectome.jobs import dataset_import_job
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.resources import CatalogResource


@dg.sensor(job=dataset_import_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def dataset_catalog_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult | dg.SkipReason:
    """Adds a `datasets` partition for each new catalog entry and requests its import run."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    new_partitions: list[str] = []
    run_requests: list[dg.RunRequest] = []
    problems: list[str] = []
    existing = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
    for name in catalog.names():
        digest = catalog.digest(name)
        if seen.get(name) == digest:
            current[name] = digest
            continue
        try:
            catalog.entry(name).source_model()
        except SourceError as exc:
            problems.append(str(exc))
            if name in seen:
                current[name] = seen[name]
            continue
        current[name] = digest
        if name not in existing:
            new_partitions.append(name)
        run_requests.append(dg.RunRequest(partition_key=name, run_key=f"{name}:{digest}", tags={"dataset": name}))
    for problem in problems:
        context.log.warning(problem)
    if not run_requests:
        reason = "; ".join(problems) if problems else "no new or changed catalog entries"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(current, sort_keys=True))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[datasets_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(current, sort_keys=True),
    )
