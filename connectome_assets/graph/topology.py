"""Exact cut-vertex analysis of an undirected graph in one linear pass.

For every vertex v: how many pieces its connected component falls into when v is removed, and
how large they are. v is an articulation point exactly when that is two or more pieces.

The pieces of G - v are the branches of the block-cut tree at v. They are read off ONE
iterative depth-first search (Hopcroft-Tarjan low points), never by removing vertices one by
one: a DFS child c of v with low(c) >= disc(v) roots a branch of its own, of subtree(c) vertices;
every other child stays attached to v's parent side, which holds the rest of the component. So
the whole analysis is O(V + E), with one CSR adjacency and a handful of per-vertex arrays.

The kernel is compiled (numba). igraph computes the same articulation points, but its Python
constructor converts the edge list one Python object per edge (about 1.4 us per edge here, a
minute for the male CNS graph), while our edges arrive from ClickHouse as numpy arrays. igraph
and networkx are the oracles of the tests and the peers of `benchmarks/graph.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _undirected_csr(n, src, dst):  # pragma: no cover - compiled
    """Both arcs of every edge, grouped by tail (counting sort); arc -> edge id for multigraphs."""
    m = len(src)
    indptr = np.zeros(n + 1, np.int64)
    for i in range(m):
        indptr[src[i] + 1] += 1
        indptr[dst[i] + 1] += 1
    for v in range(n):
        indptr[v + 1] += indptr[v]
    fill = indptr[:-1].copy()
    heads = np.empty(2 * m, src.dtype)
    edge_of_arc = np.empty(2 * m, np.int64)
    for i in range(m):
        a, b = src[i], dst[i]
        heads[fill[a]] = b
        edge_of_arc[fill[a]] = i
        fill[a] += 1
        heads[fill[b]] = a
        edge_of_arc[fill[b]] = i
        fill[b] += 1
    return indptr, heads, edge_of_arc


@numba.njit(cache=True, nogil=True)
def _cut_vertex_pass(n, indptr, heads, edge_of_arc):  # pragma: no cover - compiled
    disc = np.full(n, -1, np.int64)
    low = np.zeros(n, np.int64)
    tree_edge = np.full(n, -1, np.int64)  # the edge id that discovered each vertex
    subtree = np.ones(n, np.int64)
    component = np.empty(n, np.int64)
    is_root = np.zeros(n, np.bool_)
    branches = np.zeros(n, np.int64)  # DFS children that become pieces of their own
    branch_total = np.zeros(n, np.int64)
    branch_max = np.zeros(n, np.int64)
    stack = np.empty(n, np.int64)
    next_arc = np.empty(n, np.int64)
    component_sizes = np.empty(n, np.int64)
    clock = 0
    components = 0
    for root in range(n):
        if disc[root] != -1:
            continue
        disc[root] = clock
        low[root] = clock
        clock += 1
        component[root] = components
        is_root[root] = True
        next_arc[root] = indptr[root]
        top = 0
        stack[0] = root
        while top >= 0:
            v = stack[top]
            if next_arc[v] < indptr[v + 1]:
                arc = next_arc[v]
                next_arc[v] += 1
                w = heads[arc]
                if disc[w] == -1:
                    disc[w] = clock
                    low[w] = clock
                    clock += 1
                    component[w] = components
                    tree_edge[w] = edge_of_arc[arc]
                    next_arc[w] = indptr[w]
                    top += 1
                    stack[top] = w
                elif edge_of_arc[arc] != tree_edge[v] and disc[w] < low[v]:
                    low[v] = disc[w]
            else:
                top -= 1
                if top >= 0:
                    parent = stack[top]
                    subtree[parent] += subtree[v]
                    if low[v] < low[parent]:
                        low[parent] = low[v]
                    if low[v] >= disc[parent]:
                        branches[parent] += 1
                        branch_total[parent] += subtree[v]
                        if subtree[v] > branch_max[parent]:
                            branch_max[parent] = subtree[v]
        component_sizes[components] = subtree[root]
        components += 1
    return component, component_sizes[:components], is_root, branches, branch_total, branch_max


@dataclass(frozen=True)
class CutVertexAnalysis:
    """Per vertex (arrays of length n) plus the component structure of the whole graph."""

    component: np.ndarray  # component id; ids ascend with the smallest vertex of the component
    component_sizes: np.ndarray
    largest_component: int  # the largest; ties go to the one holding the smallest vertex
    pieces: np.ndarray  # components v's component falls into without v (0 for an isolated v)
    largest_piece: np.ndarray  # vertices in the largest of those pieces
    is_articulation_point: np.ndarray
    separated_neurons: np.ndarray  # vertices cut off from the largest component by removing v
    components_after_removal: np.ndarray  # components of the whole graph without v

    @property
    def components(self) -> int:
        return len(self.component_sizes)


def analyse_cut_vertices(n: int, src: np.ndarray, dst: np.ndarray) -> CutVertexAnalysis:
    """Articulation points and their separation counts for the undirected graph on n vertices
    with edges (src[i], dst[i]); parallel edges and both directions of a pair are fine, self-loops
    must already be removed (they change nothing and would count as back edges)."""
    if len(src) != len(dst):
        raise ValueError("src and dst must have the same length")
    index_type = np.int32 if n < 2**31 else np.int64
    src = np.ascontiguousarray(src, dtype=index_type)
    dst = np.ascontiguousarray(dst, dtype=index_type)
    if len(src) and (src == dst).any():
        raise ValueError("self-loops must be removed before the cut-vertex analysis")
    indptr, heads, edge_of_arc = _undirected_csr(n, src, dst)
    component, sizes, is_root, branches, branch_total, branch_max = _cut_vertex_pass(n, indptr, heads, edge_of_arc)
    del indptr, heads, edge_of_arc
    size_of_own = sizes[component] if n else np.zeros(0, np.int64)
    # A non-root vertex keeps its parent side as one more piece: everything not in its branches.
    parent_side = np.where(is_root, 0, size_of_own - 1 - branch_total)
    pieces = branches + (~is_root)
    largest_piece = np.maximum(parent_side, branch_max)
    largest = int(np.argmax(sizes)) if len(sizes) else -1
    in_largest = component == largest
    separated = np.where(in_largest, size_of_own - 1 - largest_piece, 0)
    return CutVertexAnalysis(
        component=component,
        component_sizes=sizes,
        largest_component=largest,
        pieces=pieces,
        largest_piece=largest_piece,
        is_articulation_point=pieces >= 2,
        separated_neurons=separated,
        components_after_removal=len(sizes) - 1 + pieces,
    )
