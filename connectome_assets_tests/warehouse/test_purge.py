"""Purging one dataset: its source and dataset-scoped rows go, everything else stays."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from clickhouse_connect.driver.client import Client

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.purge import NotADatasetTableError, execute_purge, plan_purge

# Every table that holds per-dataset rows in the scenario, in purge order. `mv_synapse_pre` is a
# materialized view with an inner table; `mv_edges_to` writes TO `mv_edge_target` and holds nothing.
DATASET_TABLES = [
    "neurons",
    "synapses",
    "mv_edge_target",
    "mv_neuron_types",
    "mv_synapse_pre",
    "precomputed_analysis_status",
    "precomputed_bottleneck_neurons",
]
# Global tables: no dataset_id column, or a dataset_id column outside the mv_/precomputed_ naming.
GLOBAL_TABLES = ["mv_global", "precomputed_global_stats", "dataset_catalog"]
# Rows per dataset and table; the MVs are filled by the synapse inserts.
ROWS_A = {
    "neurons": 3,
    "synapses": 4,
    "mv_edge_target": 4,
    "mv_neuron_types": 2,
    "mv_synapse_pre": 4,
    "precomputed_analysis_status": 2,
    "precomputed_bottleneck_neurons": 3,
}
ROWS_B = {
    "neurons": 2,
    "synapses": 1,
    "mv_edge_target": 1,
    "mv_neuron_types": 3,
    "mv_synapse_pre": 1,
    "precomputed_analysis_status": 1,
    "precomputed_bottleneck_neurons": 1,
}


@dataclass(frozen=True)
class TwoDatasets:
    a: uuid.UUID
    b: uuid.UUID


def _values(rows: list[tuple]) -> str:
    return ", ".join("(" + ", ".join(repr(v) for v in row) + ")" for row in rows)


def build_two_datasets(client: Client, db: str, store: MetadataStore) -> TwoDatasets:
    """Datasets a and b in every dataset table, global tables beside them, state rows for both."""
    a, b = store.ensure_dataset("a", "flyem_feather"), store.ensure_dataset("b", "flyem_feather")
    sa, sb = str(a), str(b)
    statements = [
        f"CREATE TABLE {db}.mv_neuron_types (dataset_id UUID, type String, n UInt64) ENGINE = MergeTree ORDER BY (dataset_id, type)",
        f"CREATE MATERIALIZED VIEW {db}.mv_synapse_pre ENGINE = MergeTree ORDER BY dataset_id AS SELECT dataset_id, pre_neuron_id FROM {db}.synapses",
        f"CREATE TABLE {db}.mv_edge_target (dataset_id UUID, pre UInt64, post UInt64) ENGINE = MergeTree ORDER BY (dataset_id, pre, post)",
        f"CREATE MATERIALIZED VIEW {db}.mv_edges_to TO {db}.mv_edge_target AS "
        f"SELECT dataset_id, pre_neuron_id AS pre, post_neuron_id AS post FROM {db}.synapses",
        f"CREATE TABLE {db}.mv_global (type String, n UInt64) ENGINE = MergeTree ORDER BY type",
        f"CREATE TABLE {db}.precomputed_global_stats (metric String, value Float64) ENGINE = MergeTree ORDER BY metric",
        f"CREATE TABLE {db}.dataset_catalog (dataset_id UUID, name String) ENGINE = MergeTree ORDER BY dataset_id",
        f"INSERT INTO {db}.neurons (dataset_id, neuron_id, name) VALUES "
        + _values([(sa, 1, "x"), (sa, 2, "y"), (sa, 3, "z"), (sb, 1, "x"), (sb, 9, "w")]),
        f"INSERT INTO {db}.synapses (dataset_id, pre_neuron_id, post_neuron_id, weight) VALUES "
        + _values([(sa, 1, 2, 3), (sa, 2, 3, 1), (sa, 3, 1, 2), (sa, 1, 3, 5)]),
        # b's synapses in a second insert: the MVs then see two blocks.
        f"INSERT INTO {db}.synapses (dataset_id, pre_neuron_id, post_neuron_id, weight) VALUES " + _values([(sb, 1, 9, 4)]),
        f"INSERT INTO {db}.mv_neuron_types VALUES " + _values([(sa, "KC", 2), (sa, "MBON", 1), (sb, "KC", 1), (sb, "PN", 1), (sb, "LN", 1)]),
        f"INSERT INTO {db}.precomputed_analysis_status "
        "(dataset_id, product, status, backend, row_count, exact, params, source_data_version, computed_at) VALUES "
        + _values([(d, name, "ok", "cpu", 1, True, "", "v1", "2024-01-01") for d, name in ((sa, "bottleneck"), (sa, "motifs"), (sb, "bottleneck"))]),
        f"INSERT INTO {db}.precomputed_bottleneck_neurons (dataset_id, neuron_id, rank) VALUES "
        + _values([(sa, 1, 1), (sa, 2, 2), (sa, 3, 3), (sb, 9, 1)]),
        f"INSERT INTO {db}.mv_global VALUES ('KC', 3), ('PN', 1)",
        f"INSERT INTO {db}.precomputed_global_stats VALUES ('datasets', 2), ('neurons', 5), ('synapses', 5)",
        f"INSERT INTO {db}.dataset_catalog VALUES " + _values([(sa, "a"), (sb, "b")]),
    ]
    for statement in statements:
        client.command(statement)

    for dataset, rows in ((a, ROWS_A), (b, ROWS_B)):
        for table in ("neurons", "synapses", "mv_neuron_types"):
            store.begin_upload(dataset, table)
            store.finish_upload(dataset, table, rows[table])
    store.begin_upload(a, "precomputed_bottleneck_neurons")
    store.fail_upload(a, "precomputed_bottleneck_neurons", "timed out")
    return TwoDatasets(a, b)


def dataset_counts(client: Client, db: str, dataset_id: uuid.UUID) -> dict[str, int]:
    return {
        table: int(client.command(f"SELECT count() FROM {db}.{table} WHERE dataset_id = {{ds:UUID}}", parameters={"ds": str(dataset_id)}))
        for table in DATASET_TABLES
    }


def fingerprint(client: Client, db: str, table: str, where: str = "1") -> tuple[int, int]:
    """Row count and an order-independent hash of the rows' contents."""
    count, digest = client.query(f"SELECT count(), sum(cityHash64(toString(tuple(*)))) FROM {db}.{table} WHERE {where}").result_rows[0]
    return int(count), int(digest)


def untouched_snapshot(client: Client, db: str, keep: uuid.UUID) -> dict[str, tuple[int, int]]:
    """What must survive a purge of the other dataset: `keep`'s rows and every global table."""
    snapshot = {table: fingerprint(client, db, table, f"dataset_id = '{keep}'") for table in DATASET_TABLES}
    snapshot |= {table: fingerprint(client, db, table) for table in GLOBAL_TABLES}
    return snapshot


def mutation_count(client: Client, db: str) -> int:
    return int(client.command(f"SELECT count() FROM system.mutations WHERE database = '{db}'"))


def test_scenario_holds_what_the_tests_assume(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    ds = build_two_datasets(clickhouse, database, metadata_store)
    assert dataset_counts(clickhouse, database, ds.a) == ROWS_A
    assert dataset_counts(clickhouse, database, ds.b) == ROWS_B
    global_counts = {t: fingerprint(clickhouse, database, t)[0] for t in GLOBAL_TABLES}
    assert global_counts == {"mv_global": 2, "precomputed_global_stats": 3, "dataset_catalog": 2}


def test_dry_run_plan_lists_exact_counts_and_deletes_nothing(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    ds = build_two_datasets(clickhouse, database, metadata_store)
    plan = plan_purge(clickhouse, database, ds.a)
    assert plan.table_names == DATASET_TABLES  # never mv_edges_to, mv_global, precomputed_global_stats, dataset_catalog
    assert {p.table: p.rows for p in plan.tables} == ROWS_A
    assert plan.total_rows == 22
    assert dataset_counts(clickhouse, database, ds.a) == ROWS_A
    assert mutation_count(clickhouse, database) == 0
    assert metadata_store.table_state(ds.a, "synapses").upload_state == "uploaded"


def test_purge_deletes_only_the_dataset_and_resets_its_state(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    ds = build_two_datasets(clickhouse, database, metadata_store)
    before = untouched_snapshot(clickhouse, database, ds.b)
    plan = plan_purge(clickhouse, database, ds.a)

    result = execute_purge(clickhouse, plan, metadata_store)

    assert result.deleted == ROWS_A and result.total_rows == 22
    assert dataset_counts(clickhouse, database, ds.a) == dict.fromkeys(DATASET_TABLES, 0)
    assert dataset_counts(clickhouse, database, ds.b) == ROWS_B
    assert untouched_snapshot(clickhouse, database, ds.b) == before
    # State rows of a's purged tables are reset (the failed one too); no row is created.
    assert result.reset_state == ["mv_neuron_types", "neurons", "precomputed_bottleneck_neurons", "synapses"]
    for table in result.reset_state:
        state = metadata_store.table_state(ds.a, table)
        assert (state.upload_state, state.row_count, state.uploaded_at, state.error_message) == ("pending", None, None, None)
    assert metadata_store.table_state(ds.a, "mv_edge_target") is None
    for table in ("neurons", "synapses", "mv_neuron_types"):
        state = metadata_store.table_state(ds.b, table)
        assert (state.upload_state, state.row_count) == ("uploaded", ROWS_B[table])
    assert state.uploaded_at is not None


def test_tables_option_touches_only_those_tables(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    ds = build_two_datasets(clickhouse, database, metadata_store)
    before = untouched_snapshot(clickhouse, database, ds.b)
    plan = plan_purge(clickhouse, database, ds.a, ["synapses"])
    assert [(p.table, p.rows) for p in plan.tables] == [("synapses", 4)]

    result = execute_purge(clickhouse, plan, metadata_store)

    assert result.deleted == {"synapses": 4} and result.reset_state == ["synapses"]
    assert dataset_counts(clickhouse, database, ds.a) == {**ROWS_A, "synapses": 0}
    assert untouched_snapshot(clickhouse, database, ds.b) == before
    assert metadata_store.table_state(ds.a, "synapses").upload_state == "pending"
    neurons = metadata_store.table_state(ds.a, "neurons")
    assert (neurons.upload_state, neurons.row_count) == ("uploaded", 3)
    assert metadata_store.table_state(ds.a, "precomputed_bottleneck_neurons").upload_state == "failed"


@pytest.mark.parametrize("tables", [["synapses", "mv_global"], ["nope"], ["mv_edges_to"], ["precomputed_global_stats"], ["dataset_catalog"]])
def test_unknown_or_global_tables_are_refused_before_anything_is_deleted(
    clickhouse, database: str, metadata_store: MetadataStore, tables: list[str]
) -> None:
    ds = build_two_datasets(clickhouse, database, metadata_store)
    rejected = [t for t in tables if t != "synapses"]
    with pytest.raises(NotADatasetTableError, match=f"^{rejected[0]} is not a dataset table of {database} .*nothing was deleted"):
        plan_purge(clickhouse, database, ds.a, tables)
    assert dataset_counts(clickhouse, database, ds.a) == ROWS_A
    assert mutation_count(clickhouse, database) == 0


def test_purge_of_an_empty_dataset_runs_no_mutation(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    build_two_datasets(clickhouse, database, metadata_store)
    empty = metadata_store.ensure_dataset("empty", "flyem_feather")
    plan = plan_purge(clickhouse, database, empty)
    assert plan.total_rows == 0 and plan.table_names == DATASET_TABLES
    result = execute_purge(clickhouse, plan, metadata_store)
    assert result.deleted == dict.fromkeys(DATASET_TABLES, 0) and result.reset_state == []
    assert mutation_count(clickhouse, database) == 0


def test_reset_table_state_changes_only_existing_rows(metadata_store: MetadataStore) -> None:
    a, b = metadata_store.ensure_dataset("a", "flyem_feather"), metadata_store.ensure_dataset("b", "flyem_feather")
    for dataset in (a, b):
        metadata_store.begin_upload(dataset, "synapses")
        metadata_store.finish_upload(dataset, "synapses", 10)
    metadata_store.begin_upload(a, "neurons")
    metadata_store.fail_upload(a, "neurons", "boom")

    assert metadata_store.reset_table_state(a, ["synapses", "neurons", "never_uploaded", "synapses"]) == ["neurons", "synapses"]
    assert metadata_store.reset_table_state(a, []) == []
    for table in ("synapses", "neurons"):
        state = metadata_store.table_state(a, table)
        assert (state.upload_state, state.row_count, state.uploaded_at, state.error_message) == ("pending", None, None, None)
    assert metadata_store.table_state(a, "never_uploaded") is None
    other = metadata_store.table_state(b, "synapses")
    assert (other.upload_state, other.row_count) == ("uploaded", 10)
