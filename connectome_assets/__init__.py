"""connectome_assets: a Dagster asset-orchestrated data platform for connectomics."""
