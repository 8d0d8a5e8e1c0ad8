import dagster as dg

# One partition per DVID export folder under CONNECTOME_EXPORTS; the key is the folder name.
dvid_exports_partitions = dg.DynamicPartitionsDefinition(name="dvid_exports")
