"""`dvid_export_sensor`: a new, complete DVID export becomes a partition and a volume run.

An export is complete when DVID's `export.log` is there, or when its listing (names, sizes,
modification times) is the same on two ticks in a row. The cursor maps each export name to
`{"digest": …, "requested": bool}`, so each export is requested once.
"""

import json

import dagster as dg

from connectome_assets.defs.resources import VolumesResource
from connectome_assets.defs.volumes.jobs import volume_export_job
from connectome_assets.defs.volumes.partitions import dvid_exports_partitions
from connectome_assets.volumes.build import list_exports


@dg.sensor(job=volume_export_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def dvid_export_sensor(context: dg.SensorEvaluationContext, volumes: VolumesResource) -> dg.SensorResult:
    """Adds a `dvid_exports` partition for each new complete export and requests its volume run."""
    seen: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, dict] = {}
    existing = set(context.instance.get_dynamic_partitions(dvid_exports_partitions.name))
    new_partitions, run_requests, waiting = [], [], []
    for export in list_exports(volumes.exports):
        before = seen.get(export.name, {})
        requested = before.get("requested", False)
        if not requested and export.complete(before.get("digest")):
            if export.name not in existing:
                new_partitions.append(export.name)
            run_requests.append(dg.RunRequest(partition_key=export.name, run_key=f"{export.name}:{export.digest}", tags={"dvid_export": export.name}))
            requested = True
        elif not requested:
            waiting.append(export.name)
        current[export.name] = {"digest": export.digest, "requested": requested}
    cursor = json.dumps(current, sort_keys=True)
    if not run_requests:
        reason = f"waiting for {', '.join(waiting)} to finish" if waiting else "no new DVID exports"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[dvid_exports_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=cursor,
    )
