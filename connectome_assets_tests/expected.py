"""What the tests expect of the main job, written down once (independently of the definitions)."""

# Every blocking check of the dataset_import job, as (asset, check).
MAIN_JOB_CHECKS = (
    ("neurons", "neuron_ids_unique"),
    ("neurons", "table_state_consistent"),
    ("synapses", "endpoint_integrity"),
    ("synapses", "table_state_consistent"),
    ("bottleneck_neurons", "graph_products_present"),
    ("feature_exports", "export_row_counts"),
)
