"""ClickHouse warehouse: DDL, atomic dataset-table uploads, integrity queries. Never imports dagster."""
