import dagster as dg

from connectome_assets.defs.connectome.assets import graph_edges, neurons, synapses
from connectome_assets.defs.connectome.partitions import datasets_partitions

# The main job: one dataset partition's import and its blocking checks (checks of selected
# assets are included by Dagster).
dataset_import_job = dg.define_asset_job(
    "dataset_import",
    selection=dg.AssetSelection.assets(neurons, synapses, graph_edges),
    partitions_def=datasets_partitions,
    description="Import one dataset: neurons, filtered synapses, the edge stream, with blocking integrity checks.",
)
