"""Which ClickHouse tables hold rows of one dataset (runbook: "Cleaning A Partial Import").

A derived table is dataset-scoped when its name starts with `mv_` or `precomputed_` AND it has a
`dataset_id` column, as `system.columns` says. Tables without `dataset_id` are global and are
never touched per dataset. A materialized view that writes `TO` another table holds no rows
itself (its target is found on its own); one with an inner table is listed by its own name,
because ClickHouse forwards `ALTER … DELETE` and `SELECT` on it to the inner table.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from connectome_assets.warehouse.schema import CANONICAL_TABLES, check_identifier


def dataset_scoped_tables(client: Client, database: str) -> list[str]:
    """The `mv_*` / `precomputed_*` tables of `database` that hold per-dataset rows, sorted."""
    db = check_identifier(database)
    rows = client.query(
        """SELECT c.table, t.engine, toString(t.uuid)
           FROM system.columns AS c
           INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
           WHERE c.database = {db:String} AND c.name = 'dataset_id'
             AND (startsWith(c.table, 'mv_') OR startsWith(c.table, 'precomputed_'))
           ORDER BY c.table""",
        parameters={"db": db},
    ).result_rows
    table_names = {name for (name,) in client.query("SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": db}).result_rows}
    return [
        table
        for table, engine, table_uuid in rows
        if engine.endswith("MergeTree") or (engine == "MaterializedView" and {f".inner_id.{table_uuid}", f".inner.{table}"} & table_names)
    ]


def dataset_tables(client: Client, database: str) -> list[str]:
    """Every table with rows of a dataset: the source tables, then the dataset-scoped products."""
    return [*CANONICAL_TABLES, *dataset_scoped_tables(client, database)]
