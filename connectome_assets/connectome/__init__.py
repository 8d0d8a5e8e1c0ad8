"""Pure connectome library: source models, readers, canonical schemas, the endpoint filter.

Never imports dagster.
"""
