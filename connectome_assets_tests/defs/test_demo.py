"""`make demo`'s path on the real C. elegans data, checked against counts computed from cect directly."""

from __future__ import annotations

import json
import math
from importlib import resources

import networkx as nx
import numpy as np
import pytest

from connectome_assets.cli import materialize_dataset
from connectome_assets.connectome.sources.cect import cect_cell_name, cect_neuron_id
from connectome_assets.demo import DEMO_DATASETS, run_demo
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect


def expected_counts(reader: str) -> tuple[int, int]:
    """(connection rows in the source, rows whose both endpoints are neurons) straight from the JSON."""
    from cect.Cells import is_any_neuron

    data = json.loads((resources.files("cect") / "cache" / f"{reader}.json").read_text())
    neuron = np.array([is_any_neuron(cect_cell_name(n)) for n in data["nodes"]])
    read = kept = 0
    for matrix in data["connections"].values():
        pre, post = np.nonzero(np.asarray(matrix))
        read += len(pre)
        kept += int((neuron[pre] & neuron[post]).sum())
    return read, kept


def expected_graph(reader: str) -> nx.DiGraph:
    """The neuron graph straight from the JSON: weights summed over connection types, no self-connections."""
    from cect.Cells import is_any_neuron

    data = json.loads((resources.files("cect") / "cache" / f"{reader}.json").read_text())
    names = [cect_cell_name(n) for n in data["nodes"]]
    graph = nx.DiGraph()
    graph.add_nodes_from(cect_neuron_id(n) for n in names if is_any_neuron(n))
    for matrix in data["connections"].values():
        for i, j in zip(*np.nonzero(np.asarray(matrix))):
            a, b = cect_neuron_id(names[i]), cect_neuron_id(names[j])
            if a != b and a in graph and b in graph:
                previous = graph.edges[a, b]["weight"] if graph.has_edge(a, b) else 0
                graph.add_edge(a, b, weight=previous + int(matrix[i][j]))
    # distance = 1/weight, scaled by the lcm of the weights into exact integers: networkx then sees
    # every true tie between paths (1/3 + 1/6 = 1/2), as igraph's tolerant comparison does.
    scale = math.lcm(*{w for _, _, w in graph.edges(data="weight")})
    for _, _, edge in graph.edges(data=True):
        edge["distance"] = scale // edge["weight"]
    return graph


def check_bottlenecks(client, database: str, dataset, reader: str) -> None:
    """Articulation points, separation counts and betweenness against networkx on the same data."""
    result = client.query(
        f"SELECT neuron_id, is_articulation_point, separated_neurons, betweenness FROM {database}.precomputed_bottleneck_neurons WHERE dataset_id = '{dataset}'"
    )
    rows = {row[0]: row[1:] for row in result.result_rows}
    graph = expected_graph(reader)
    undirected = graph.to_undirected()
    assert set(rows) == {n for n in graph if undirected.degree(n) > 0}
    points = set(nx.articulation_points(undirected))
    assert {n for n, (ap, _, _) in rows.items() if ap} == points
    largest = max(nx.connected_components(undirected), key=len)
    for n in points & largest:
        rest = undirected.subgraph(largest - {n})
        assert rows[n][1] == len(largest) - 1 - max(len(c) for c in nx.connected_components(rest))
    expected = nx.betweenness_centrality(graph, weight="distance", normalized=False)
    assert {n: rows[n][2] for n in rows} == pytest.approx({n: expected[n] for n in rows}, rel=1e-9, abs=1e-9)


def test_demo_imports_real_connectomes_dropping_only_non_neuron_endpoints(settings: Settings, capsys) -> None:
    assert run_demo(settings) == 0
    out = capsys.readouterr().out
    assert "volume demo-neurites: OK" in out and "neuroglancer: precomputed://file://" in out
    assert "ng_scale_3" in out and "12 of 12 scale checks passed" in out
    store = MetadataStore(settings.metadata_url)
    client = connect(settings.clickhouse_url)
    for name, (reader, _) in DEMO_DATASETS.items():
        read, kept = expected_counts(reader)
        assert f"dataset {name}: OK" in out
        dataset = store.dataset_id(name)
        rows = client.command(f"SELECT count() FROM {settings.clickhouse_database}.synapses WHERE dataset_id = '{dataset}'")
        assert rows == kept and store.table_state(dataset, "synapses").row_count == kept
        assert f"connections read  {read:>12,}" in out and f"written           {kept:>12,}" in out
        check_bottlenecks(client, settings.clickhouse_database, dataset, reader)
    # A second run of the same release replaces, never duplicates.
    assert materialize_dataset(settings, "witvliet2021-adult").ok
    dataset = store.dataset_id("witvliet2021-adult")
    assert client.command(f"SELECT count() FROM {settings.clickhouse_database}.synapses WHERE dataset_id = '{dataset}'") == expected_counts("WitvlietDataReader8")[1]
