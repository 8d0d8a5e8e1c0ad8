"""Atomic dataset-table uploads and integrity queries against chDB."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from connectome_assets.connectome.schemas import CONNECTION_SCHEMA
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.integrity import duplicate_neuron_ids, endpoint_integrity
from connectome_assets.warehouse.upload import (
    MIN_INSERT_ROWS,
    dataset_row_count,
    rebatch,
    replace_dataset_rows,
    upload_table_atomically,
)


def connections(pre: list[int], post: list[int], weight: int = 1) -> pa.RecordBatch:
    n = len(pre)
    return pa.record_batch(
        [pa.array(pre, pa.uint64()), pa.array(post, pa.uint64()), pa.array([weight] * n, pa.uint32()), pa.array([""] * n), pa.array([""] * n)],
        schema=CONNECTION_SCHEMA,
    )


def neurons_batch(ids: list[int]) -> pa.Table:
    from connectome_assets.connectome.sources.base import canonical_neurons

    return canonical_neurons("test", pa.array(ids, pa.uint64()), "id", {}, {})


def test_rebatch_groups_small_batches_into_large_inserts() -> None:
    small = [connections([1] * 1000, [2] * 1000)] * 150
    sizes = [t.num_rows for t in rebatch(small, MIN_INSERT_ROWS)]
    assert sum(sizes) == 150_000
    assert all(size >= MIN_INSERT_ROWS for size in sizes[:-1])


def test_replace_swaps_only_this_dataset(clickhouse, database: str) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    replace_dataset_rows(clickhouse, database, "synapses", a, [connections([1, 2], [2, 3])])
    replace_dataset_rows(clickhouse, database, "synapses", b, [connections([7], [8])])
    result = replace_dataset_rows(clickhouse, database, "synapses", a, [connections([4, 5, 6], [5, 6, 4])])
    assert result.rows == 3
    assert dataset_row_count(clickhouse, database, "synapses", a) == 3
    assert dataset_row_count(clickhouse, database, "synapses", b) == 1
    stored = clickhouse.query(f"SELECT toString(dataset_id) FROM {database}.synapses WHERE pre_neuron_id = 7").result_rows
    assert stored == [(str(b),)]  # the UUID survives the Arrow round trip unswapped
    empty = replace_dataset_rows(clickhouse, database, "synapses", a, [])
    assert empty.rows == 0 and dataset_row_count(clickhouse, database, "synapses", a) == 0
    assert clickhouse.command(f"SELECT count() FROM system.tables WHERE database = '{database}' AND name LIKE '_staging%'") == 0


def test_failure_mid_stream_keeps_previous_rows_and_records_failed(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    upload_table_atomically(clickhouse, database, "synapses", dataset, [connections([1, 2], [2, 1])], metadata_store)
    before = metadata_store.table_state(dataset, "synapses")

    def breaks_after_first_batch():
        yield connections(list(range(100_000)), list(range(100_000)))
        raise OSError("connection reset while streaming batch 2")

    with pytest.raises(OSError, match="batch 2"):
        upload_table_atomically(clickhouse, database, "synapses", dataset, breaks_after_first_batch(), metadata_store, insert_rows=MIN_INSERT_ROWS)
    assert dataset_row_count(clickhouse, database, "synapses", dataset) == 2
    after = metadata_store.table_state(dataset, "synapses")
    assert after.upload_state == "failed" and "batch 2" in after.error_message
    assert (after.row_count, after.uploaded_at) == (before.row_count, before.uploaded_at)
    assert clickhouse.command(f"SELECT count() FROM system.tables WHERE database = '{database}' AND name LIKE '_staging%'") == 0

    upload_table_atomically(clickhouse, database, "synapses", dataset, [connections([3], [4])], metadata_store)
    assert metadata_store.table_state(dataset, "synapses").upload_state == "uploaded"
    assert metadata_store.table_state(dataset, "synapses").row_count == 1


def test_endpoint_integrity_counts_edges_whose_neuron_is_missing(clickhouse, database: str) -> None:
    dataset, other = uuid.uuid4(), uuid.uuid4()
    replace_dataset_rows(clickhouse, database, "neurons", dataset, [neurons_batch([1, 2, 3])])
    replace_dataset_rows(clickhouse, database, "neurons", other, [neurons_batch([9])])
    replace_dataset_rows(clickhouse, database, "synapses", dataset, [connections([1, 2, 9, 3], [2, 3, 1, 8])])
    found = endpoint_integrity(clickhouse, database, dataset)
    # 9 exists only in the other dataset: endpoints resolve within the same dataset.
    assert (found.pre_missing, found.post_missing) == (1, 1)
    assert (found.sample_pre_missing, found.sample_post_missing) == ([9], [8])
    assert not found.ok
    replace_dataset_rows(clickhouse, database, "synapses", dataset, [connections([1, 2], [2, 3])])
    assert endpoint_integrity(clickhouse, database, dataset).ok


def test_neuron_id_0_is_not_mistaken_for_a_missing_join(clickhouse, database: str) -> None:
    """With ClickHouse's default join_use_nulls=0 an unmatched row looks like neuron 0."""
    dataset = uuid.uuid4()
    replace_dataset_rows(clickhouse, database, "neurons", dataset, [neurons_batch([0, 1])])
    replace_dataset_rows(clickhouse, database, "synapses", dataset, [connections([0, 5], [1, 0])])
    found = endpoint_integrity(clickhouse, database, dataset)
    assert (found.pre_missing, found.post_missing) == (1, 0)


def test_duplicate_neuron_ids_are_found(clickhouse, database: str) -> None:
    dataset = uuid.uuid4()
    table = neurons_batch([1, 2, 3])
    replace_dataset_rows(clickhouse, database, "neurons", dataset, [table, table.slice(1, 1)])
    found = duplicate_neuron_ids(clickhouse, database, dataset)
    assert (found.duplicated_ids, found.sample) == (1, [2])
