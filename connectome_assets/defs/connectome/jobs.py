import dagster as dg

# The main job: one dataset partition's import, its graph products and their Parquet exports,
# with their blocking checks (Dagster includes the checks of selected assets). Keys, not
# objects: the later stages import this one.
DATASET_IMPORT_ASSETS = ("neurons", "synapses", "graph_edges", "bottleneck_neurons", "feature_exports")

dataset_import_job = dg.define_asset_job(
    "dataset_import",
    selection=dg.AssetSelection.assets(*DATASET_IMPORT_ASSETS),
    description="Import one dataset: neurons, filtered synapses, the edge stream, the bottleneck neurons and the Parquet exports, each behind its blocking checks.",
)
