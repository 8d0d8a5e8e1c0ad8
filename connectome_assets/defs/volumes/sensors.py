"""`dvid_export_sensor`: a new, complete DVID export becomes a `dvid_exports` partition, which
automation (defs/automation.py) then converts: the info, every scale behind its check, the entry.

An export is complete when DVID's `export.log` is there, or when its listing (names, sizes,
modification times) is the same on two ticks in a row. The partition is added only then: a
partition is a promise that the export is whole. The cursor maps each export name to
`{"digest": …, "added": bool}`, so each export is added once.
"""

import json

import dagster as dg

from connectome_assets.defs.automation import SENSOR_STATUS
from connectome_assets.defs.resources import VolumesResource
from connectome_assets.defs.volumes.partitions import dvid_exports_partitions
from connectome_assets.volumes.build import list_exports


@dg.sensor(minimum_interval_seconds=60, default_status=SENSOR_STATUS)
def dvid_export_sensor(context: dg.SensorEvaluationContext, volumes: VolumesResource) -> dg.SensorResult:
    """Adds a `dvid_exports` partition for each new export once it is complete."""
    seen: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, dict] = {}
    existing = set(context.instance.get_dynamic_partitions(dvid_exports_partitions.name))
    new_partitions, waiting = [], []
    for export in list_exports(volumes.exports):
        before = seen.get(export.name, {})
        added = before.get("added", False) or export.name in existing
        if not added and export.complete(before.get("digest")):
            new_partitions.append(export.name)
            added = True
        elif not added:
            waiting.append(export.name)
        current[export.name] = {"digest": export.digest, "added": added}
    cursor = json.dumps(current, sort_keys=True)
    if not new_partitions:
        reason = f"waiting for {', '.join(waiting)} to finish" if waiting else "no new DVID exports"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(dynamic_partitions_requests=[dvid_exports_partitions.build_add_request(new_partitions)], cursor=cursor)
