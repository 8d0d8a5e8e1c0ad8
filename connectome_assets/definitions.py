"""The code location `connectome_assets`: every stage's definitions plus shared resources."""

import dagster as dg

from connectome_assets.defs.connectome.definitions import connectome_defs
from connectome_assets.defs.resources import build_resources
from connectome_assets.settings import load_settings


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(connectome_defs, dg.Definitions(resources=build_resources(load_settings())))


defs = build_definitions()
