"""Streaming Arrow batches out of chDB: every row, block by block, and the connection freed."""

from __future__ import annotations

import pyarrow as pa

from connectome_assets.warehouse.client import arrow_batches


def test_arrow_batches_stream_every_row_in_blocks(clickhouse, database: str) -> None:
    clickhouse.command(f"CREATE TABLE {database}.numbers (n UInt64, label String) ENGINE = MergeTree ORDER BY n")
    clickhouse.command(f"INSERT INTO {database}.numbers SELECT number, toString(number % 7) FROM numbers(300000)")
    with arrow_batches(clickhouse, f"SELECT n, label FROM {database}.numbers WHERE n >= {{low:UInt64}} ORDER BY n", {"low": 5}) as batches:
        received = list(batches)
    assert len(received) > 1  # blocks, not one materialised result
    table = pa.Table.from_batches(received)
    assert table.num_rows == 299_995 and table.column("n").to_pylist()[:2] == [5, 6]
    assert table.schema.field("label").type == pa.string()


def test_leaving_early_frees_the_connection(clickhouse, database: str) -> None:
    with arrow_batches(clickhouse, "SELECT number FROM numbers(1000000)") as batches:
        next(batches)
    assert clickhouse.command("SELECT 41 + 1") == 42
