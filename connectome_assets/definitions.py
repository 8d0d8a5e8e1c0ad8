"""The code location `connectome_assets`: every stage's definitions plus shared resources."""

import dagster as dg

# Stage modules, not their Definitions objects: one Definitions at module scope (`defs`).
from connectome_assets.defs.automation import automation_sensor
from connectome_assets.defs.connectome import definitions as connectome_stage
from connectome_assets.defs.executor import executor_for
from connectome_assets.defs.exports import definitions as exports_stage
from connectome_assets.defs.graph import definitions as graph_stage
from connectome_assets.defs.maintenance import definitions as maintenance_stage
from connectome_assets.defs.registry import definitions as registry_stage
from connectome_assets.defs.resources import build_resources
from connectome_assets.defs.volumes import definitions as volumes_stage
from connectome_assets.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    resources = build_resources(settings)
    stages = dg.Definitions.merge(
        connectome_stage.connectome_defs,
        graph_stage.graph_defs,
        exports_stage.exports_defs,
        maintenance_stage.maintenance_defs,
        volumes_stage.volumes_defs,
        registry_stage.registry_defs,
        dg.Definitions(sensors=[automation_sensor], resources=resources),
    )
    executor = executor_for(settings, stages)
    return stages if executor is None else dg.Definitions.merge(stages, dg.Definitions(executor=executor))


defs = build_definitions()
