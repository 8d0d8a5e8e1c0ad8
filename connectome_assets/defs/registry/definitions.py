import dagster as dg

from connectome_assets.defs.registry.assets import registry_entries, volume_registry_entry

registry_defs = dg.Definitions(assets=[registry_entries, volume_registry_entry])
