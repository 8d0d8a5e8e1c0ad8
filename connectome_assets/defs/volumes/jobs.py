import dagster as dg

# Every scale of one export's volume, each behind the blocking check of the one below.
volume_export_job = dg.define_asset_job(
    "volume_export",
    selection=dg.AssetSelection.groups("volumes"),
    description="Convert one DVID export to a neuroglancer precomputed volume: the info, then each scale, verified before the next.",
)
