"""The bottleneck product end to end on chDB: rows, ranks, status, source versions, failures."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from connectome_assets.graph.bottleneck import BottleneckParams, UnresolvedEndpointError, precompute_bottleneck_neurons
from connectome_assets.graph.status import graph_source_version, latest_status
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.upload import dataset_row_count, upload_table_atomically
from connectome_assets_tests.deployed import connections, upload_source


@pytest.fixture
def store(tmp_path: Path):
    store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    store.migrate()
    yield store
    store.dispose()


def upload_dataset(client, database: str, store: MetadataStore, name: str, ids: list[int], edges: list[tuple[int, int, int]]) -> uuid.UUID:
    polarity = pa.array(["excitatory" if i % 2 else "inhibitory" for i in range(len(ids))])
    return upload_source(client, database, store, name, ids, edges, {"polarity": polarity, "type": pa.array([f"T{i}" for i in ids]), "name": pa.array([f"N{i}" for i in ids])})


def product_rows(client, database: str, dataset: uuid.UUID) -> list[dict]:
    result = client.query(
        f"SELECT * EXCEPT dataset_id FROM {database}.precomputed_bottleneck_neurons WHERE dataset_id = {{ds:UUID}} ORDER BY rank",
        parameters={"ds": str(dataset)},
    )
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def test_bridge_between_two_cliques_ranks_the_bridge_ends_first(clickhouse, database: str, store: MetadataStore) -> None:
    ids = [100, 101, 102, 103, 204, 205, 206, 999]  # 999 has no connection: a vertex, not a row
    k4 = [(a, b, 3) for a in ids[:4] for b in ids[:4] if a < b]
    k3 = [(204, 205, 1), (205, 206, 1), (206, 204, 1)]
    edges = [*k4, *k3, (103, 204, 2), (204, 103, 1), (205, 205, 7), (205, 205, 1)]  # a self-connection, twice
    dataset = upload_dataset(clickhouse, database, store, "cliques", ids, edges)
    lines: list[str] = []
    result = precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams(), lines.append)
    # The read counts every row of vw_graph_edges, the self-connection's too.
    assert (result.read["edges"], result.product.edges, result.product.self_loops) == (12, 11, 1)
    assert re.fullmatch(r"vw_graph_edges read: done, \d+ blocks, 12 edges in \d+ s, \S+ edges/s", lines[0]), lines
    rows = product_rows(clickhouse, database, dataset)
    assert {row["neuron_id"] for row in rows[:2]} == {103, 204}  # every path between the cliques runs through both
    by_id = {row["neuron_id"]: row for row in rows}
    assert set(by_id) == set(ids) - {999}
    assert {i for i, row in by_id.items() if row["is_articulation_point"]} == {103, 204}
    assert (by_id[103]["separated_neurons"], by_id[204]["separated_neurons"]) == (3, 2)  # largest component = 7 neurons
    assert by_id[103]["components_after_removal"] == 3  # the two sides and the isolated neuron 999
    assert by_id[100]["components_after_removal"] == 2
    assert (by_id[204]["in_degree"], by_id[204]["out_degree"], by_id[204]["degree"]) == (2, 2, 4)
    assert (by_id[204]["in_weight"], by_id[204]["out_weight"]) == (3, 2)
    assert by_id[205]["in_weight"] == 1  # the self-connection is not an edge
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    assert by_id[100]["polarity"] == "inhibitory" and by_id[100]["type"] == "T100" and by_id[100]["name"] == "N100"
    status = latest_status(clickhouse, database, dataset, "bottleneck_neurons")
    assert status is not None
    assert (status.status, status.backend, status.row_count, status.exact) == ("ok", "in_memory_small", 7, True)
    assert status.params == {"min_weight": 1, "small_network_threshold": 5000}
    assert status.source_data_version == graph_source_version(store, dataset) == result.source_data_version
    assert result.product.self_loops == 1 and result.product.edges == len(edges) - 2


def test_betweenness_matches_networkx_on_random_graphs(clickhouse, database: str, store: MetadataStore) -> None:
    rng = np.random.default_rng(7)
    for case in range(3):
        n = 40
        ids = (rng.choice(10**9, n, replace=False) + 1).tolist()
        pairs = {(int(a), int(b)) for a, b in rng.integers(0, n, size=(90, 2)) if a != b}
        # Powers of two make every 1/weight path length exact, so ties are ties for both libraries.
        edges = [(ids[a], ids[b], int(2 ** rng.integers(0, 4))) for a, b in sorted(pairs)]
        dataset = upload_dataset(clickhouse, database, store, f"random{case}", ids, edges)
        precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams())
        graph = nx.DiGraph()
        graph.add_nodes_from(ids)
        graph.add_weighted_edges_from([(a, b, 1.0 / w) for a, b, w in edges], weight="distance")
        expected = nx.betweenness_centrality(graph, weight="distance", normalized=False)
        rows = product_rows(clickhouse, database, dataset)
        assert rows, "a graph with edges has a product"
        for row in rows:
            assert row["betweenness"] == pytest.approx(expected[row["neuron_id"]], abs=1e-9)
        betweenness = [row["betweenness"] for row in rows]
        assert betweenness == sorted(betweenness, reverse=True)


def test_large_backend_ranks_by_separation_without_betweenness(clickhouse, database: str, store: MetadataStore) -> None:
    ids = list(range(1, 8))
    edges = [(1, 2, 1), (2, 3, 1), (3, 4, 1), (4, 5, 1), (5, 6, 1), (6, 7, 1)]  # a path of 7
    dataset = upload_dataset(clickhouse, database, store, "path", ids, edges)
    precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams(small_network_threshold=3))
    rows = product_rows(clickhouse, database, dataset)
    assert [row["neuron_id"] for row in rows] == [4, 3, 5, 2, 6, 1, 7]  # middle first; ties by id
    assert [row["separated_neurons"] for row in rows] == [3, 2, 2, 1, 1, 0, 0]
    assert all(row["betweenness"] is None for row in rows)
    assert latest_status(clickhouse, database, dataset, "bottleneck_neurons").backend == "streaming_topology"


def test_min_weight_drops_weak_edges(clickhouse, database: str, store: MetadataStore) -> None:
    dataset = upload_dataset(clickhouse, database, store, "weak", [1, 2, 3], [(1, 2, 5), (2, 3, 1)])
    precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams(min_weight=2))
    assert [row["neuron_id"] for row in product_rows(clickhouse, database, dataset)] == [1, 2]


def test_a_graph_without_edges_is_an_empty_product_with_status_empty_graph(clickhouse, database: str, store: MetadataStore) -> None:
    dataset = upload_dataset(clickhouse, database, store, "lonely", [1, 2, 3], [(2, 2, 4)])  # only a self-connection
    result = precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams())
    assert result.rows_written == 0
    status = latest_status(clickhouse, database, dataset, "bottleneck_neurons")
    assert (status.status, status.row_count) == ("empty_graph", 0)


def test_polarity_stored_as_int8_is_read_through_to_string(chdb_url: str, database: str, store: MetadataStore) -> None:
    from connectome_assets.warehouse.client import connect
    from connectome_assets.warehouse.schema import ensure_schema

    client = connect(chdb_url)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    # A production-shaped neurons table (runbook: MANC exposed polarity as Int8).
    client.command(
        f"""CREATE TABLE {database}.neurons (dataset_id UUID, neuron_id UInt64, name String, type LowCardinality(String), polarity Int8)
            ENGINE = MergeTree PARTITION BY dataset_id ORDER BY (dataset_id, neuron_id)"""
    )
    ensure_schema(client, database)
    dataset = store.ensure_dataset("int8", "test")
    store.begin_upload(dataset, "neurons")
    client.insert(f"{database}.neurons", [[dataset, 1, "a", "A", 1], [dataset, 2, "b", "B", -1], [dataset, 3, "c", "C", 0]], column_names=["dataset_id", "neuron_id", "name", "type", "polarity"])
    store.finish_upload(dataset, "neurons", 3)
    upload_table_atomically(client, database, "synapses", dataset, [connections([(1, 2, 1), (2, 3, 1)])], store)
    precompute_bottleneck_neurons(client, database, store, dataset, BottleneckParams())
    by_id = {row["neuron_id"]: row for row in product_rows(client, database, dataset)}
    assert {i: row["polarity"] for i, row in by_id.items()} == {1: "1", 2: "-1", 3: "0"}


def test_a_failure_keeps_the_previous_rows_and_records_failed(clickhouse, database: str, store: MetadataStore) -> None:
    dataset = upload_dataset(clickhouse, database, store, "broken", [1, 2, 3], [(1, 2, 1), (2, 3, 1)])
    precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams())
    # An edge to a neuron the dataset does not have: what the endpoint check exists to stop.
    upload_table_atomically(clickhouse, database, "synapses", dataset, [connections([(3, 42, 1)])], store)
    with pytest.raises(UnresolvedEndpointError, match="post neuron"):
        precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams())
    status = latest_status(clickhouse, database, dataset, "bottleneck_neurons")
    assert status.status == "failed" and "42" in status.message and not status.exact
    assert dataset_row_count(clickhouse, database, "precomputed_bottleneck_neurons", dataset) == 3 == status.row_count


def test_reimport_changes_the_source_version(clickhouse, database: str, store: MetadataStore) -> None:
    dataset = upload_dataset(clickhouse, database, store, "again", [1, 2], [(1, 2, 1)])
    before = precompute_bottleneck_neurons(clickhouse, database, store, dataset, BottleneckParams()).source_data_version
    upload_dataset(clickhouse, database, store, "again", [1, 2], [(1, 2, 1)])
    assert graph_source_version(store, dataset) != before
