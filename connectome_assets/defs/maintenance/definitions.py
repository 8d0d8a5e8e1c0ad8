import dagster as dg

from connectome_assets.defs.maintenance.jobs import purge_dataset

maintenance_defs = dg.Definitions(jobs=[purge_dataset])
