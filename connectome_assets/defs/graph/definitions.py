import dagster as dg

from connectome_assets.defs.graph.assets import bottleneck_neurons
from connectome_assets.defs.graph.checks import graph_checks

graph_defs = dg.Definitions(assets=[bottleneck_neurons], asset_checks=graph_checks)
