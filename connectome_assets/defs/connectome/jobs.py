import dagster as dg

from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS

# The main job: one dataset partition's import, its graph products and their Parquet exports,
# and their registry entries, with their blocking checks (Dagster includes the checks of selected assets). Keys, not
# objects: the later stages import this one.

dataset_import_job = dg.define_asset_job(
    "dataset_import",
    selection=dg.AssetSelection.assets(*DATASET_IMPORT_ASSETS),
    description="Import one dataset: neurons, filtered synapses, the edge stream, the bottleneck neurons, the Parquet exports and their registry entries, each behind its blocking checks.",
)
