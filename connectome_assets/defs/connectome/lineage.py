"""The main job's assets by key, in lineage order, without importing Dagster: the job, the CLI's
`materialize` and `backfill`, and the tests share this one list."""

DATASET_IMPORT_ASSETS = ("neurons", "synapses", "graph_edges", "bottleneck_neurons", "feature_exports", "registry_entries")
