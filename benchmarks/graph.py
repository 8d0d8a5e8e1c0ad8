"""Bottleneck benchmark: the exact bottleneck precompute at male CNS scale, beside igraph and networkx.

The graph
---------
A synthetic neuron graph at the scale of the repaired male CNS import (211,743 neurons, 26.0 M
synapse rows): `--neurons` (default 200,000) neurons with sparse uint64 body ids and `--edges`
(default 25,600,000) distinct directed weighted edges, plus `--edges / 2000` self-connections.
Degrees are heavy-tailed: each neuron draws an out- and a correlated in-propensity from a
lognormal (sigma 1.8), and edge endpoints are drawn in proportion to them (Chung-Lu), so a few
hubs have hundreds of thousands of partners while thousands of neurons have one or two —
which is what makes articulation points. Weights are lognormal synapse counts (>= 1). Generated
once (seeded) and cached under `--cache-dir` as `.npy` files.

What is measured
----------------
Each step runs in its own fresh (spawned) process:

* load (not compared): `neurons` and `synapses` rows into a fresh chDB store through
  `upload_table_atomically`, exactly as an import leaves them.
* ours: `precompute_bottleneck_neurons` — the whole product, timed from the call to its return:
  ClickHouse `vw_graph_edges` streamed as Arrow batches into numpy index arrays -> cut-vertex
  analysis (separated neurons, components after removal), degrees and weights -> ranked rows
  -> atomic swap into `precomputed_bottleneck_neurons` -> the analysis status row. Then, timed
  apart, the blocking check's `verify_bottleneck_product`.
* igraph: the loop-free edge list already in memory as numpy index arrays ->
  `igraph.Graph(n, edges)` -> `articulation_points()`; nothing else.
* networkx (skip with `--skip-networkx`): the same arrays -> `nx.Graph` -> `articulation_points`.

Per step: wall seconds, CPU seconds, peak RSS (`ru_maxrss`, which includes chDB's query memory
for ours) and peak anonymous memory (sampled every 10 ms). The script exits non-zero unless
every engine finds exactly the same articulation points.

Usage: python benchmarks/graph.py [--neurons 200000] [--edges 25600000] [--seed 20261121]
                                  [--cache-dir benchmarks/.cache] [--skip-networkx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from measure import Measurement, Section, in_fresh_process  # benchmarks/measure.py, beside this script

# numpy, igraph, networkx and the library are imported inside the functions that use them, so
# each step's process loads only its own libraries and its memory is its own.

ID_LOW, ID_HIGH = 10_000, 500_000_000_000
GENERATOR_VERSION = 1  # part of the cache key: bump it when the generated graph changes
DEFAULT_SEED = 20261121
DATABASE = "bench"


@dataclass(frozen=True)
class GraphFiles:
    directory: str

    def path(self, name: str) -> str:
        return str(Path(self.directory) / f"{name}.npy")


def generate_graph(cache_dir: Path, neurons: int, edges: int, seed: int) -> GraphFiles:
    import numpy as np

    directory = cache_dir / f"graph-v{GENERATOR_VERSION}-n{neurons}-e{edges}-s{seed}"
    files = GraphFiles(str(directory))
    if (directory / "done").exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(ID_LOW, ID_HIGH, int(neurons * 1.01), dtype=np.int64))
    ids = np.sort(rng.choice(ids, neurons, replace=False)).astype(np.uint64)
    out_propensity = rng.lognormal(0.0, 1.8, neurons)
    in_propensity = out_propensity**0.7 * rng.lognormal(0.0, 1.0, neurons)
    out_cdf = np.cumsum(out_propensity) / out_propensity.sum()
    in_cdf = np.cumsum(in_propensity) / in_propensity.sum()
    keys = np.empty(0, np.int64)
    while len(keys) < edges:  # draw, keep distinct loop-free pairs, top up
        draw = int((edges - len(keys)) * 1.3) + 1000
        pre = np.minimum(np.searchsorted(out_cdf, rng.random(draw)), neurons - 1)
        post = np.minimum(np.searchsorted(in_cdf, rng.random(draw)), neurons - 1)
        fresh = pre.astype(np.int64) * neurons + post
        keys = np.unique(np.concatenate([keys, fresh[pre != post]]))
    keys = np.sort(rng.choice(keys, edges, replace=False))
    src, dst = (keys // neurons).astype(np.int32), (keys % neurons).astype(np.int32)
    del keys
    loops = rng.choice(neurons, edges // 2000, replace=False).astype(np.int32)
    weight = np.maximum(1, np.rint(rng.lognormal(0.7, 1.1, edges + len(loops)))).astype(np.uint32)
    np.save(files.path("neuron_ids"), ids)
    np.save(files.path("src"), src)
    np.save(files.path("dst"), dst)
    np.save(files.path("loops"), loops)
    np.save(files.path("weight"), weight)
    (directory / "done").touch()
    return files


def _store(store_dir: str):
    from connectome_assets.metadata.store import MetadataStore
    from connectome_assets.warehouse.client import connect

    store = MetadataStore(f"sqlite:///{store_dir}/metadata.sqlite")
    store.migrate()
    return connect(f"chdb://{store_dir}/clickhouse"), store


def load_warehouse(files: GraphFiles, store_dir: str) -> float:
    """neurons and synapses rows of the graph in a fresh chDB store; returns the seconds taken."""
    import time

    import numpy as np
    import pyarrow as pa

    from connectome_assets.connectome.schemas import CONNECTION_SCHEMA
    from connectome_assets.connectome.sources.base import canonical_neurons
    from connectome_assets.warehouse.schema import ensure_schema
    from connectome_assets.warehouse.upload import upload_table_atomically

    started = time.perf_counter()
    client, store = _store(store_dir)
    ensure_schema(client, DATABASE)
    dataset = store.ensure_dataset("male-cns-scale", "synthetic")
    ids = np.load(files.path("neuron_ids"))
    n = len(ids)
    text = {
        "type": pa.array([f"T{i % 9000}" for i in range(n)]),
        "polarity": pa.array(np.array(["excitatory", "inhibitory", "unknown"])[np.arange(n) % 3]),
    }
    upload_table_atomically(client, DATABASE, "neurons", dataset, [canonical_neurons("bench", pa.array(ids), "bodyId", text, {})], store)
    src, dst, loops, weight = (np.load(files.path(name)) for name in ("src", "dst", "loops", "weight"))
    pre = ids[np.concatenate([src, loops])]
    post = ids[np.concatenate([dst, loops])]
    rows, chunk = len(pre), 1 << 22
    empty = pa.array([""] * chunk)

    def batches():
        for start in range(0, rows, chunk):
            part = slice(start, min(start + chunk, rows))
            size = part.stop - part.start
            yield pa.record_batch([pa.array(pre[part]), pa.array(post[part]), pa.array(weight[part]), empty[:size], empty[:size]], schema=CONNECTION_SCHEMA)

    upload_table_atomically(client, DATABASE, "synapses", dataset, batches(), store)
    client.close()
    return time.perf_counter() - started


@dataclass
class StepRun:
    step: str
    measured: Measurement
    articulation_points: list[int]  # neuron ids, sorted
    notes: dict[str, object] = field(default_factory=dict)


def run_ours(store_dir: str) -> StepRun:
    import time

    import numpy as np

    from connectome_assets.graph.bottleneck import BottleneckParams, precompute_bottleneck_neurons, verify_bottleneck_product
    from connectome_assets.graph.topology import analyse_cut_vertices

    analyse_cut_vertices(3, np.array([0, 1]), np.array([1, 2]))  # load the compiled kernels first
    client, store = _store(store_dir)
    dataset = store.dataset_id("male-cns-scale")
    with Section() as measured:
        result = precompute_bottleneck_neurons(client, DATABASE, store, dataset, BottleneckParams())
    started = time.perf_counter()
    verdict = verify_bottleneck_product(client, DATABASE, store, "male-cns-scale")
    check_seconds = time.perf_counter() - started
    articulation = client.query(
        f"SELECT neuron_id FROM {DATABASE}.precomputed_bottleneck_neurons WHERE dataset_id = {{ds:UUID}} AND is_articulation_point ORDER BY neuron_id",
        parameters={"ds": str(dataset)},
    ).result_columns
    product = result.product
    notes = {
        "rows written": result.rows_written,
        "phases (s)": ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in result.phase_seconds.items()),
        "edges": product.edges,
        "self-connections left out": product.self_loops,
        "components": product.components,
        "largest component": product.largest_component,
        "backend": product.backend,
        "graph_products_present check": f"{'passed' if verdict.passed else 'FAILED: ' + verdict.problem} in {check_seconds:.2f} s",
    }
    client.close()
    return StepRun("ours", measured, sorted(articulation[0]) if articulation else [], notes)


def _loop_free_edges(files: GraphFiles):
    import numpy as np

    return np.load(files.path("neuron_ids")), np.load(files.path("src")), np.load(files.path("dst"))


def run_igraph(files: GraphFiles) -> StepRun:
    import igraph
    import numpy as np

    ids, src, dst = _loop_free_edges(files)
    with Section() as measured:
        graph = igraph.Graph(n=len(ids), edges=np.column_stack([src, dst]), directed=False)
        points = graph.articulation_points()
    return StepRun("igraph", measured, sorted(ids[points].tolist()))


def run_networkx(files: GraphFiles) -> StepRun:
    import networkx as nx

    ids, src, dst = _loop_free_edges(files)
    with Section() as measured:
        graph = nx.Graph()
        graph.add_nodes_from(range(len(ids)))
        graph.add_edges_from(zip(src.tolist(), dst.tolist()))
        points = list(nx.articulation_points(graph))
    return StepRun("networkx", measured, sorted(ids[points].tolist()))


def print_table(runs: list[StepRun]) -> None:
    print(f"\n{'step':<10} {'seconds':>9} {'CPU s':>8} {'peak RSS MiB':>13} {'peak anon MiB':>14} {'articulation points':>20}")
    for run in runs:
        m = run.measured
        print(f"{run.step:<10} {m.seconds:>9.2f} {m.cpu_seconds:>8.1f} {m.peak_rss_mib:>13,.0f} {m.peak_anon_mib:>14,.0f} {len(run.articulation_points):>20,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", type=int, default=200_000)
    parser.add_argument("--edges", type=int, default=25_600_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--cache-dir", type=Path, default=Path(__file__).parent / ".cache")
    parser.add_argument("--skip-networkx", action="store_true")
    args = parser.parse_args()

    files = in_fresh_process(generate_graph, args.cache_dir, args.neurons, args.edges, args.seed)
    with tempfile.TemporaryDirectory(prefix="graph-bench-") as store_dir:
        load_seconds = in_fresh_process(load_warehouse, files, store_dir)
        print(f"graph: {args.neurons:,} neurons, {args.edges:,} edges (+{args.edges // 2000:,} self-connections); chDB load {load_seconds:.1f} s")
        runs = [in_fresh_process(run_ours, store_dir), in_fresh_process(run_igraph, files)]
    if not args.skip_networkx:
        runs.append(in_fresh_process(run_networkx, files))
    print_table(runs)
    for key, value in runs[0].notes.items():
        print(f"  ours: {key}: {value}")
    ours, igraph_run = runs[0], runs[1]
    print(f"\nours (ClickHouse -> whole product -> table) takes {ours.measured.seconds / igraph_run.measured.seconds:.2f}x igraph's build + articulation_points()")
    if any(run.articulation_points != ours.articulation_points for run in runs):
        print("ENGINES DISAGREE on the articulation points", file=sys.stderr)
        return 1
    print("all engines agree on every articulation point")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
