"""Deployed state for export and cache tests: uploaded source rows, product rows, status rows."""

from __future__ import annotations

import uuid

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.schemas import CONNECTION_SCHEMA
from connectome_assets.connectome.sources.base import canonical_neurons
from connectome_assets.graph.status import AnalysisStatus, graph_source_version, record_status
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.upload import upload_table_atomically

BOTTLENECK_COLUMNS = [
    "dataset_id", "neuron_id", "name", "type", "polarity", "is_articulation_point", "separated_neurons", "components_after_removal",
    "degree", "in_degree", "out_degree", "in_weight", "out_weight", "betweenness", "rank",
]  # fmt: skip


def connections(edges: list[tuple[int, int, int]]) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([e[0] for e in edges], pa.uint64()),
            pa.array([e[1] for e in edges], pa.uint64()),
            pa.array([e[2] for e in edges], pa.uint32()),
            pa.array(["chemical"] * len(edges)),
            pa.array(["LA(R)"] * len(edges)),
        ],
        schema=CONNECTION_SCHEMA,
    )


def upload_source(
    client: Client,
    database: str,
    store: MetadataStore,
    name: str,
    ids: list[int],
    edges: list[tuple[int, int, int]],
    text: dict[str, pa.Array] | None = None,
) -> uuid.UUID:
    """Register the dataset and upload its neurons (with optional text columns such as `type`)
    and synapses the one atomic way, so it has a source version."""
    dataset_id = store.ensure_dataset(name, "flyem_feather")
    neurons = canonical_neurons("test", pa.array(ids, pa.uint64()), "id", text or {}, {})
    upload_table_atomically(client, database, "neurons", dataset_id, [neurons], store)
    upload_table_atomically(client, database, "synapses", dataset_id, [connections(edges)], store)
    return dataset_id


def insert_bottlenecks(client: Client, database: str, dataset_id: uuid.UUID, neuron_ids: list[int]) -> None:
    """Product rows as the graph stage would have deployed them (one with a NULL betweenness)."""
    rows = [
        [dataset_id, n, f"N{n}", f"T{n}", "excitatory", rank == 1, 10 - rank, 2, 3, 1, 2, 5 * n, 7 * n, None if rank == 2 else 0.5 / rank, rank]
        for rank, n in enumerate(neuron_ids, start=1)
    ]
    client.insert(f"{database}.precomputed_bottleneck_neurons", rows, column_names=BOTTLENECK_COLUMNS)


def record_bottleneck_status(
    client: Client, database: str, store: MetadataStore, dataset_id: uuid.UUID, status: str, rows: int, version: str | None = None
) -> None:
    """A status row for the product; the version defaults to the dataset's current source version."""
    version = version or graph_source_version(store, dataset_id)
    record_status(client, database, AnalysisStatus(dataset_id, "bottleneck_neurons", status, "in_memory_small", rows, True, {}, version))
