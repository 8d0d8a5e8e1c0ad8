import dagster as dg

from connectome_assets.defs.volumes.assets import ng_info, scale_assets
from connectome_assets.defs.volumes.checks import scale_checks
from connectome_assets.defs.volumes.jobs import volume_export_job
from connectome_assets.defs.volumes.sensors import dvid_export_sensor

volumes_defs = dg.Definitions(assets=[ng_info, *scale_assets], asset_checks=scale_checks, jobs=[volume_export_job], sensors=[dvid_export_sensor])
