"""Maintenance stage: operator jobs that repair the warehouse (purge a dataset)."""
