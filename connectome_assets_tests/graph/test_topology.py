"""Cut-vertex analysis: hand-computed graphs, then random graphs against vertex removal."""

from __future__ import annotations

import igraph
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectome_assets.graph.topology import analyse_cut_vertices


def analyse(n: int, edges: list[tuple[int, int]]):
    src = np.array([a for a, _ in edges], dtype=np.int64)
    dst = np.array([b for _, b in edges], dtype=np.int64)
    return analyse_cut_vertices(n, src, dst)


def articulation_points(result) -> set[int]:
    return set(np.flatnonzero(result.is_articulation_point).tolist())


def test_path() -> None:
    result = analyse(5, [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert articulation_points(result) == {1, 2, 3}
    assert result.separated_neurons.tolist() == [0, 1, 2, 1, 0]
    assert result.components_after_removal.tolist() == [1, 2, 2, 2, 1]


def test_star() -> None:
    result = analyse(6, [(0, leaf) for leaf in range(1, 6)])
    assert articulation_points(result) == {0}
    assert result.separated_neurons.tolist() == [4, 0, 0, 0, 0, 0]  # the largest piece left is one leaf
    assert result.components_after_removal.tolist() == [5, 1, 1, 1, 1, 1]


def test_two_triangles_joined_through_one_vertex() -> None:
    result = analyse(5, [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 2)])
    assert articulation_points(result) == {2}
    assert result.separated_neurons.tolist() == [0, 0, 2, 0, 0]
    assert result.components_after_removal[2] == 2


def test_bridge_between_two_cliques() -> None:
    k4 = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    k3 = [(4, 5), (5, 6), (6, 4)]
    result = analyse(7, [*k4, *k3, (3, 4)])
    assert articulation_points(result) == {3, 4}
    # without 3: {0,1,2} and {4,5,6}; without 4: {0,1,2,3} and {5,6}
    assert result.separated_neurons.tolist() == [0, 0, 0, 3, 2, 0, 0]
    assert result.components_after_removal.tolist() == [1, 1, 1, 2, 2, 1, 1]


def test_disconnected_pieces_measure_against_the_largest_component() -> None:
    path = [(0, 1), (1, 2)]  # 3 neurons
    star = [(3, leaf) for leaf in (4, 5, 6, 7)]  # 5 neurons: the largest component
    result = analyse(9, [*path, *star])  # 8 is isolated
    assert result.components == 3 and result.component_sizes[result.largest_component] == 5
    assert articulation_points(result) == {1, 3}
    assert result.separated_neurons[1] == 0  # cuts its own component, not the largest one
    assert result.separated_neurons[3] == 3
    assert result.components_after_removal.tolist() == [3, 4, 3, 6, 3, 3, 3, 3, 2]


def test_both_directions_and_parallel_edges_are_not_a_cycle_breaker() -> None:
    # 0 <-> 1 in both directions is still a bridge: removing 1 cuts 0 off.
    result = analyse(3, [(0, 1), (1, 0), (1, 2), (1, 2)])
    assert articulation_points(result) == {1}
    assert result.separated_neurons.tolist() == [0, 1, 0]


def test_ties_for_the_largest_component_go_to_the_smallest_vertex() -> None:
    result = analyse(6, [(0, 1), (1, 2), (3, 4), (4, 5)])
    assert result.largest_component == result.component[0]
    assert result.separated_neurons.tolist() == [0, 1, 0, 0, 0, 0]


def test_empty_graph() -> None:
    result = analyse(3, [])
    assert not result.is_articulation_point.any()
    assert result.separated_neurons.tolist() == [0, 0, 0]
    assert result.components_after_removal.tolist() == [2, 2, 2]
    assert analyse(0, []).components == 0


def test_self_loops_are_refused() -> None:
    with pytest.raises(ValueError, match="self-loops"):
        analyse(2, [(0, 1), (1, 1)])


def _by_removal(n: int, edges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The definition, literally: remove each vertex and look (test oracle, O(V * (V + E)))."""
    graph = nx.MultiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges)
    components = sorted(nx.connected_components(graph), key=lambda c: (-len(c), min(c)))
    largest = components[0] if components else set()
    separated, after = [], []
    for v in range(n):
        rest = graph.copy()
        rest.remove_node(v)
        pieces = list(nx.connected_components(rest))
        after.append(len(pieces))
        kept = max((len(piece & largest) for piece in pieces), default=0)
        separated.append(len(largest) - 1 - kept if v in largest else 0)
    return separated, after


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 25).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=45))))
def test_random_graphs_match_vertex_removal_igraph_and_networkx(case) -> None:
    n, pairs = case
    edges = [(a, b) for a, b in pairs if a != b]
    result = analyse(n, edges)
    separated, after = _by_removal(n, edges)
    assert result.separated_neurons.tolist() == separated
    assert result.components_after_removal.tolist() == after
    assert articulation_points(result) == set(igraph.Graph(n=n, edges=edges).articulation_points())
    assert articulation_points(result) == set(nx.articulation_points(nx.Graph(edges)))
