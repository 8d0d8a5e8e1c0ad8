import dagster as dg

# Every scale of one export's volume, each behind the blocking check of the one below, then its
# registry entry (named by key: the registry stage imports this one's partitions).
VOLUME_EXPORT_SELECTION = dg.AssetSelection.groups("volumes") | dg.AssetSelection.assets("volume_registry_entry")

volume_export_job = dg.define_asset_job(
    "volume_export",
    selection=VOLUME_EXPORT_SELECTION,
    description="Convert one DVID export to a neuroglancer precomputed volume: the info, then each scale, verified before the next, then its registry entry.",
)
