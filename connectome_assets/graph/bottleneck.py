"""Bottleneck neurons: exact cut-vertex analysis for every graph, exact betweenness for small ones.

Definitions (docs/graph-products.md): the dataset's neuron graph has every neuron of `neurons`
as a vertex (isolated ones included) and one edge per `vw_graph_edges` row between two
different neurons with weight >= `min_weight`; self-connections are counted but are not edges.
The product holds one row per neuron with at least one edge, ranked:

- every graph: `is_articulation_point`, `separated_neurons` (neurons cut off from the largest
  connected component when the neuron is removed), `components_after_removal` (connected
  components of the whole graph without it), degrees and weights;
- graphs of at most `small_network_threshold` neurons (backend `in_memory_small`): exact
  directed weighted betweenness with distance 1/weight, which ranks them; larger graphs
  (backend `streaming_topology`) rank by separated_neurons.

The large path streams edges from ClickHouse as Arrow batches straight into preallocated numpy
index arrays; it never holds the edge rows as Python objects or a whole Arrow table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import igraph
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.filtering import AnnotatedNeuronSet
from connectome_assets.graph.status import (
    BOTTLENECK_NEURONS,
    AnalysisStatus,
    SourceNotUploadedError,
    graph_source_version,
    latest_status,
    product_problem,
    record_status,
    remedy,
)
from connectome_assets.graph.topology import analyse_cut_vertices
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.progress import Progress, discard
from connectome_assets.warehouse.schema import check_identifier, ensure_schema
from connectome_assets.warehouse.upload import dataset_row_count, upload_table_atomically

DEFAULT_MIN_WEIGHT = 1
DEFAULT_SMALL_NETWORK_THRESHOLD = 5000


class UnresolvedEndpointError(RuntimeError):
    """An edge names a neuron the dataset does not have: the endpoint check should have failed."""


@dataclass(frozen=True)
class BottleneckParams:
    min_weight: int = DEFAULT_MIN_WEIGHT
    small_network_threshold: int = DEFAULT_SMALL_NETWORK_THRESHOLD

    def __post_init__(self) -> None:
        if self.min_weight < 1:
            raise ValueError(f"min_weight must be at least 1, not {self.min_weight}")
        if self.small_network_threshold < 0:
            raise ValueError(f"small_network_threshold must not be negative, not {self.small_network_threshold}")


@dataclass(frozen=True)
class NeuronGraph:
    """Vertices are indices into `neuron_ids` (sorted); edges are directed, loop-free."""

    neuron_ids: np.ndarray  # uint64, sorted
    annotations: pa.Table  # name, type, polarity of each vertex, as strings
    src: np.ndarray  # int32 vertex indices
    dst: np.ndarray
    weight: np.ndarray  # uint32
    self_loops: int

    @property
    def neurons(self) -> int:
        return len(self.neuron_ids)

    @property
    def edges(self) -> int:
        return len(self.src)


def load_neuron_graph(client: Client, database: str, dataset_id: uuid.UUID, min_weight: int, progress: Progress | None = None) -> NeuronGraph:
    """The dataset's neuron graph from ClickHouse, edges streamed block by block into numpy;
    each block advances `progress` by its edge rows (their number is known only once read)."""
    db = check_identifier(database)
    params = {"ds": str(dataset_id), "min_weight": min_weight}
    # Runbook: production neurons.polarity may be Int8; cast in SQL so any stored type works.
    neurons = client.query_arrow(
        f"""SELECT neuron_id, toString(name) AS name, toString(type) AS type, toString(polarity) AS polarity
            FROM {db}.neurons WHERE dataset_id = {{ds:UUID}} ORDER BY neuron_id""",
        parameters=params,
    )
    ids = neurons.column("neuron_id").to_numpy().astype(np.uint64, copy=False)
    vertices = AnnotatedNeuronSet(ids)
    # vw_graph_edges has at most one row per synapses row, so this bounds the edge count.
    capacity = dataset_row_count(client, db, "synapses", dataset_id)
    src = np.empty(capacity, np.int32)
    dst = np.empty(capacity, np.int32)
    weight = np.empty(capacity, np.uint32)
    filled = self_loops = 0
    # Native column blocks: a real stream on chDB too (its Arrow output is materialised whole).
    with client.query_column_block_stream(
        f"""SELECT pre_neuron_id, post_neuron_id, weight FROM {db}.vw_graph_edges
            WHERE dataset_id = {{ds:UUID}} AND weight >= {{min_weight:UInt64}}""",
        parameters=params,
    ) as blocks:
        for pre_ids, post_ids, weights in blocks:
            pre = _vertex_numbers(vertices, np.asarray(pre_ids, np.uint64), "pre")
            post = _vertex_numbers(vertices, np.asarray(post_ids, np.uint64), "post")
            between = pre != post  # a self-connection is counted, but it is not an edge
            rows = int(between.sum())
            self_loops += len(pre) - rows
            if filled + rows > capacity:
                raise RuntimeError(f"vw_graph_edges returned more rows than synapses holds ({capacity}); the warehouse changed during the read")
            src[filled : filled + rows] = pre[between]
            dst[filled : filled + rows] = post[between]
            weight[filled : filled + rows] = np.asarray(weights, np.uint32)[between]
            filled += rows
            if progress is not None:
                progress.advance(len(pre))
    annotations = neurons.select(["name", "type", "polarity"])
    return NeuronGraph(ids, annotations, src[:filled], dst[:filled], weight[:filled], self_loops)


def _vertex_numbers(vertices: AnnotatedNeuronSet, endpoints: np.ndarray, side: str) -> np.ndarray:
    numbers, missing = vertices.positions_of(endpoints)
    if missing:
        unknown = np.unique(endpoints[numbers < 0])[:10].tolist()
        raise UnresolvedEndpointError(f"{missing} edges have a {side} neuron that is not among the dataset's neurons (e.g. {unknown})")
    return numbers


@dataclass(frozen=True)
class BottleneckProduct:
    rows: pa.Table  # the product table's columns, without dataset_id, ordered by rank
    status: str  # ok or empty_graph / not_applicable
    backend: str
    neurons: int
    edges: int
    self_loops: int
    articulation_points: int
    components: int
    largest_component: int


def compute_bottleneck_neurons(graph: NeuronGraph, params: BottleneckParams) -> BottleneckProduct:
    """The product rows of one neuron graph (exact; linear time for the topology)."""
    n = graph.neurons
    backend = "in_memory_small" if n <= params.small_network_threshold else "streaming_topology"
    topology = analyse_cut_vertices(n, graph.src, graph.dst)
    in_degree = np.bincount(graph.dst, minlength=n)
    out_degree = np.bincount(graph.src, minlength=n)
    # float64 sums of whole numbers are exact below 2**53 synapses.
    in_weight = np.rint(np.bincount(graph.dst, weights=graph.weight, minlength=n)).astype(np.uint64)
    out_weight = np.rint(np.bincount(graph.src, weights=graph.weight, minlength=n)).astype(np.uint64)
    degree = in_degree + out_degree
    betweenness = directed_weighted_betweenness(graph) if backend == "in_memory_small" else None
    connected = np.flatnonzero(degree > 0)
    order_keys = [
        connected,  # last key breaks ties: neuron ids ascend with the index
        -degree[connected],
        -topology.components_after_removal[connected],
        -topology.separated_neurons[connected],
    ]
    if betweenness is not None:
        order_keys.append(-betweenness[connected])
    order = connected[np.lexsort(order_keys)]
    rows = pa.table(
        {
            "neuron_id": pa.array(graph.neuron_ids[order], pa.uint64()),
            **{column: graph.annotations.column(column).take(order) for column in graph.annotations.column_names},
            "is_articulation_point": pa.array(topology.is_articulation_point[order]),
            "separated_neurons": pa.array(topology.separated_neurons[order].astype(np.uint32)),
            "components_after_removal": pa.array(topology.components_after_removal[order].astype(np.uint32)),
            "degree": pa.array(degree[order].astype(np.uint32)),
            "in_degree": pa.array(in_degree[order].astype(np.uint32)),
            "out_degree": pa.array(out_degree[order].astype(np.uint32)),
            "in_weight": pa.array(in_weight[order]),
            "out_weight": pa.array(out_weight[order]),
            "betweenness": pa.array(betweenness[order]) if betweenness is not None else pa.nulls(len(order), pa.float64()),
            "rank": pa.array(np.arange(1, len(order) + 1, dtype=np.uint32)),
        }
    )
    status = "ok" if graph.edges else ("empty_graph" if n else "not_applicable")
    return BottleneckProduct(
        rows=rows,
        status=status,
        backend=backend,
        neurons=n,
        edges=graph.edges,
        self_loops=graph.self_loops,
        articulation_points=int(topology.is_articulation_point.sum()),
        components=topology.components,
        largest_component=int(topology.component_sizes[topology.largest_component]) if n else 0,
    )


def directed_weighted_betweenness(graph: NeuronGraph) -> np.ndarray:
    """Exact betweenness of every vertex: directed, distance = 1/weight, over ordered pairs
    (not normalised). igraph, built from the (small) edge list."""
    if not graph.edges:
        return np.zeros(graph.neurons)
    g = igraph.Graph(n=graph.neurons, edges=np.column_stack([graph.src, graph.dst]), directed=True)
    return np.asarray(g.betweenness(directed=True, weights=1.0 / graph.weight.astype(np.float64)), dtype=np.float64)


@dataclass(frozen=True)
class PrecomputeResult:
    dataset_id: uuid.UUID
    product: BottleneckProduct
    source_data_version: str
    rows_written: int
    seconds: float
    phase_seconds: dict[str, float]  # read (ClickHouse -> arrays), compute, write (swap in)
    read: dict[str, Any]  # Progress.finish() of the read: edges, blocks, seconds, edges_per_second


def precompute_bottleneck_neurons(
    client: Client, database: str, store: MetadataStore, dataset_id: uuid.UUID, params: BottleneckParams, report: Callable[[str], Any] = discard
) -> PrecomputeResult:
    """Recompute the dataset's bottleneck product from its canonical rows, swap it in
    atomically, then record its analysis status. A failure records status `failed` (the previous
    rows stay) and re-raises."""
    started = time.perf_counter()
    ensure_schema(client, database)
    version = graph_source_version(store, dataset_id)
    table = BOTTLENECK_NEURONS.table
    phases: dict[str, float] = {}
    try:
        with _timed(phases, "read"):
            reading = Progress("vw_graph_edges read", report, unit="edges", step="blocks")
            graph = load_neuron_graph(client, database, dataset_id, params.min_weight, reading)
            read = reading.finish()
        with _timed(phases, "compute"):
            product = compute_bottleneck_neurons(graph, params)
            del graph
        with _timed(phases, "write"):
            upload = upload_table_atomically(client, database, table, dataset_id, [product.rows], store)
    except Exception as exc:
        previous = latest_status(client, database, dataset_id, BOTTLENECK_NEURONS.name)
        record_status(
            client,
            database,
            AnalysisStatus(
                dataset_id,
                BOTTLENECK_NEURONS.name,
                "failed",
                previous.backend if previous else "",
                dataset_row_count(client, database, table, dataset_id),
                False,
                asdict(params),
                version,
                message=f"{type(exc).__name__}: {exc}",
            ),
        )
        raise
    record_status(
        client,
        database,
        AnalysisStatus(dataset_id, BOTTLENECK_NEURONS.name, product.status, product.backend, upload.rows, True, asdict(params), version),
    )
    return PrecomputeResult(dataset_id, product, version, upload.rows, time.perf_counter() - started, phases, read)


@contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - started


def count_graph_edges(client: Client, database: str, dataset_id: uuid.UUID, min_weight: int) -> tuple[int, int]:
    """(edges, neurons with an edge) of the neuron graph as ClickHouse has it now."""
    db = check_identifier(database)
    edges, connected = client.query(
        f"""SELECT count(), uniqExact(arrayJoin([pre_neuron_id, post_neuron_id]))
            FROM {db}.vw_graph_edges
            WHERE dataset_id = {{ds:UUID}} AND weight >= {{min_weight:UInt64}} AND pre_neuron_id != post_neuron_id""",
        parameters={"ds": str(dataset_id), "min_weight": min_weight},
    ).result_rows[0]
    return int(edges), int(connected)


@dataclass(frozen=True)
class ProductVerdict:
    passed: bool
    problem: str  # one sentence when not passed
    status: AnalysisStatus | None
    product_rows: int
    graph_edges: int
    connected_neurons: int


def verify_bottleneck_product(client: Client, database: str, store: MetadataStore, dataset: str) -> ProductVerdict:
    """The product is present, current and whole: `product_problem`'s rules, and then what only the
    graph can tell — empty only when the graph truly has no edges, and one row per neuron with an
    edge (runbook: never trust an unexplained empty product)."""
    dataset_id = store.dataset_id(dataset)
    table = BOTTLENECK_NEURONS.table
    status = latest_status(client, database, dataset_id, BOTTLENECK_NEURONS.name)
    rows = dataset_row_count(client, database, table, dataset_id)
    min_weight = int(status.params.get("min_weight", DEFAULT_MIN_WEIGHT)) if status else DEFAULT_MIN_WEIGHT
    edges, connected = count_graph_edges(client, database, dataset_id, min_weight)
    try:
        problem = product_problem(table, dataset, rows, status, graph_source_version(store, dataset_id))
    except SourceNotUploadedError as exc:
        problem = str(exc)
    if not problem and rows == 0 and edges:
        problem = f"`{table}` is empty for dataset {dataset} with status '{status.status}' while its graph has {edges} edges; {remedy(table)}"
    if not problem and rows != connected:
        problem = f"`{table}` has {rows} rows for dataset {dataset} but {connected} of its neurons have an edge; {remedy(table)}"
    return ProductVerdict(not problem, problem or "", status, rows, edges, connected)
