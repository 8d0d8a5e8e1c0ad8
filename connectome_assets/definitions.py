"""The code location `connectome_assets`: every stage's definitions plus shared resources."""

import dagster as dg

from connectome_assets.defs.connectome import definitions as connectome_stage
from connectome_assets.defs.resources import build_resources
from connectome_assets.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    resources = build_resources(settings or load_settings())
    return dg.Definitions.merge(connectome_stage.connectome_defs, dg.Definitions(resources=resources))


defs = build_definitions()
