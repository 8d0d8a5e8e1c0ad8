import dagster as dg

# One partition per dataset catalog entry; the key is the dataset name.
datasets_partitions = dg.DynamicPartitionsDefinition(name="datasets")
