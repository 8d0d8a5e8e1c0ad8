"""Ingest benchmark: read + endpoint filter of a male-CNS-scale Feather release, and the chDB upload.

What is measured
----------------
Synthetic sources at the scale of the male CNS v0.9 release are generated once (seeded, streamed
in chunks) and cached under `--cache-dir`:

* `annotations.feather`: 211,743 annotated bodies (`bodyId` int64 + `type`, `instance`, `status`).
* `weights.feather`: 151,871,794 x `--scale` rows of `body_pre`, `body_post` (int64), `weight`
  (int32), LZ4-compressed Feather v2 in 64 Ki-row record batches, as pandas/pyarrow write them.

Body ids are large sparse int64 values drawn from 1e4..5e11. Each endpoint of a row is, on its
own, an annotated body with probability sqrt(`--survive`) (uniform over the 211,743) and
otherwise one of 2,117,430 unannotated bodies (ten times as many), so the expected share of rows
with BOTH endpoints annotated is `--survive` (0.17 by default; the real release keeps ~25.5 M of
151.9 M). `--scale` shrinks the weights only: the annotated set stays full size, so runs at
different scales differ in the number of rows and nothing else.

Every engine runs in its own fresh process (so its peak RSS, `ru_maxrss`, is its own), on the
same two files, and computes the same result: rows read, rows kept and the sum of the kept
weights (a checksum that the engines kept the same rows). The timed section of every engine
starts after its imports (and, for ours, after numba's one-off compile) and covers reading the
annotated ids, building the id set, and reading and filtering every weight row:

* ours: `FlyemFeather(...).read_neurons()` -> `AnnotatedNeuronSet`, then
  `filter_to_annotated_endpoints(FlyemFeather(...).iter_connections(), ...)`, consuming every
  kept batch; also reported split into the pure read (`iter_connections` alone) and the filter.
* polars: `scan_ipc` -> `filter(body_pre.is_in(ids) & body_post.is_in(ids))` -> `len()` and
  `sum(weight)` with the streaming engine.
* duckdb: the Feather file as a pyarrow dataset, `WHERE body_pre IN (SELECT bodyId ...) AND
  body_post IN (...)` -> `count(*)`, `sum(weight)`, with
  `SET disabled_optimizers='build_side_probe_side'` (otherwise DuckDB builds its hash table on
  the 151.9 M-row side).

Then, unless `--skip-upload`, our filtered stream goes through `replace_dataset_rows` into the
`synapses` table of a fresh chDB store in a temporary directory (again in its own process); the
rate is kept rows per second end to end, and the share of that time spent in read + filter.

The script exits non-zero if the engines do not agree on rows read, rows kept and weight sum.

Usage: python benchmarks/ingest.py [--scale 0.01] [--survive 0.17] [--cache-dir benchmarks/.cache]
                                   [--seed 20240611] [--skip-upload]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Imports of numpy/pyarrow/polars/duckdb/the library are local to the functions that use them:
# each engine's process then loads only its own libraries, and its peak RSS is its own.

FULL_NEURONS = 211_743
FULL_ROWS = 151_871_794
UNANNOTATED_PER_ANNOTATED = 10
ID_LOW, ID_HIGH = 10_000, 500_000_000_000
BATCH_ROWS = 1 << 16  # pandas / pyarrow `write_feather` default chunksize
GENERATE_CHUNK_ROWS = 64 * BATCH_ROWS  # rows generated in memory at a time (4 Mi)
GENERATOR_VERSION = 1  # part of the cache key: bump when the generated data changes
DEFAULT_SEED = 20240611


@dataclass(frozen=True)
class Sources:
    annotations: str
    weights: str


@dataclass
class EngineRun:
    engine: str
    rows_read: int
    rows_kept: int
    weight_sum: int
    seconds: float
    baseline_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def mrows_per_s(self) -> float:
        return self.rows_read / self.seconds / 1e6


# ---------------------------------------------------------------------------------------------
# Synthetic sources


def generate_sources(cache_dir: Path, scale: float, survive: float, seed: int) -> Sources:
    """The cached synthetic annotations + weights files for these parameters, written if absent."""
    import numpy as np
    import pyarrow as pa

    folder = cache_dir / f"v{GENERATOR_VERSION}-scale{scale:g}-survive{survive:g}-seed{seed}"
    sources = Sources(str(folder / "annotations.feather"), str(folder / "weights.feather"))
    if os.path.exists(sources.annotations) and os.path.exists(sources.weights):
        return sources
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    rng = np.random.default_rng([seed, 0])
    n_unannotated = UNANNOTATED_PER_ANNOTATED * FULL_NEURONS
    bodies = np.unique(rng.integers(ID_LOW, ID_HIGH, size=int((FULL_NEURONS + n_unannotated) * 1.01)))
    rng.shuffle(bodies)
    annotated, unannotated = bodies[:FULL_NEURONS], bodies[FULL_NEURONS : FULL_NEURONS + n_unannotated]
    assert len(unannotated) == n_unannotated

    types = rng.integers(0, 8_000, size=FULL_NEURONS)
    type_names = np.char.add("T", types.astype(str))
    sides = np.where(rng.random(FULL_NEURONS) < 0.5, "_L", "_R")
    neurons = pa.table(
        {
            "bodyId": pa.array(annotated, pa.int64()),
            "type": pa.array(type_names.astype(object), pa.string()),
            "instance": pa.array(np.char.add(type_names, sides).astype(object), pa.string()),
            "status": pa.array(np.where(rng.random(FULL_NEURONS) < 0.9, "Traced", "Anchor").astype(object), pa.string()),
        }
    )
    _write_feather(sources.annotations, neurons.schema, iter([neurons]))

    rows = round(FULL_ROWS * scale)
    annotated_share = math.sqrt(survive)

    def chunks() -> Iterator[pa.Table]:
        for index, start in enumerate(range(0, rows, GENERATE_CHUNK_ROWS)):
            n = min(GENERATE_CHUNK_ROWS, rows - start)
            chunk_rng = np.random.default_rng([seed, 1, index])
            ends = []
            for _ in range(2):
                inside = chunk_rng.random(n) < annotated_share
                ends.append(
                    np.where(
                        inside,
                        annotated[chunk_rng.integers(0, len(annotated), n)],
                        unannotated[chunk_rng.integers(0, len(unannotated), n)],
                    )
                )
            weight = chunk_rng.geometric(0.3, n).astype(np.int32)
            yield pa.table({"body_pre": ends[0], "body_post": ends[1], "weight": weight})

    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32())])
    _write_feather(sources.weights, schema, chunks())
    print(f"generated {rows:,} weight rows in {folder} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return sources


def _write_feather(path: str, schema: pa.Schema, tables: Iterator[pa.Table]) -> None:
    """An LZ4 Feather v2 file in BATCH_ROWS record batches; renamed into place only when complete."""
    import pyarrow as pa

    partial = f"{path}.partial"
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(partial, "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        for table in tables:
            writer.write_table(table, max_chunksize=BATCH_ROWS)
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------
# Engines: each function runs in a fresh process and returns its EngineRun.


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(batches: Iterator[pa.RecordBatch], into: dict[str, float], phase: str) -> Iterator[pa.RecordBatch]:
    """Pass batches through, adding the time spent producing them to into[phase]."""
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        into[phase] = into.get(phase, 0.0) + time.perf_counter() - started
        if batch is None:
            return
        yield batch


def _warm_up_filter() -> None:
    """Compile (or load from numba's cache) the filter's kernels outside the timed section."""
    import numpy as np

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet

    ids = np.arange(1, 9, dtype=np.uint64)
    AnnotatedNeuronSet(ids).endpoint_mask(ids, ids)


def run_ours(sources: Sources) -> EngineRun:
    import pyarrow.compute as pc
    import pyarrow.feather as feather

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats, filter_to_annotated_endpoints
    from connectome_assets.connectome.sources.base import iter_feather_batches
    from connectome_assets.connectome.sources.flyem_feather import WEIGHT_COLUMNS, FlyemFeather

    _warm_up_filter()
    baseline = _rss_mib()
    phases: dict[str, float] = {}
    started = time.perf_counter()
    annotated = AnnotatedNeuronSet(feather.read_table(sources.annotations, columns=["bodyId"])["bodyId"])
    phases["annotated ids -> AnnotatedNeuronSet"] = time.perf_counter() - started
    model = FlyemFeather({"annotations": sources.annotations, "weights": sources.weights}, {}, "bench")
    stats = EndpointFilterStats()
    source = _timed(model.iter_connections(), phases, "source (iter_connections: read + canonical batches)")
    weight_sum = 0
    for batch in filter_to_annotated_endpoints(source, annotated, stats):
        weight_sum += pc.sum(batch.column("weight")).as_py()
    seconds = time.perf_counter() - started
    phases["filter (filter_to_annotated_endpoints)"] = seconds - sum(phases.values())

    # Not part of the engine's time: the floor, pyarrow reading the same columns and nothing else.
    started = time.perf_counter()
    for _ in iter_feather_batches(sources.weights, WEIGHT_COLUMNS):
        pass
    phases["separate pass: raw Feather read only (iter_feather_batches)"] = time.perf_counter() - started
    return EngineRun("ours", stats.rows_read, stats.rows_kept, weight_sum, seconds, baseline, _peak_rss_mib(), phases)


def run_polars(sources: Sources) -> EngineRun:
    import polars as pl

    baseline = _rss_mib()
    started = time.perf_counter()
    ids = pl.read_ipc(sources.annotations, columns=["bodyId"])["bodyId"].implode()
    kept = (
        pl.scan_ipc(sources.weights)
        .filter(pl.col("body_pre").is_in(ids) & pl.col("body_post").is_in(ids))
        .select(pl.len().alias("rows"), pl.col("weight").cast(pl.Int64).sum().alias("weight_sum"))
        .collect(engine="streaming")
    )
    seconds = time.perf_counter() - started
    rows_read = pl.scan_ipc(sources.weights).select(pl.len()).collect().item()
    return EngineRun("polars", rows_read, kept["rows"].item(), kept["weight_sum"].item(), seconds, baseline, _peak_rss_mib())


def run_duckdb(sources: Sources) -> EngineRun:
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.feather as feather

    baseline = _rss_mib()
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET disabled_optimizers = 'build_side_probe_side'")
    con.register("annotations", feather.read_table(sources.annotations, columns=["bodyId"]))
    con.register("weights", ds.dataset(sources.weights, format="feather"))
    rows_kept, weight_sum = con.execute(
        """SELECT count(*), sum(weight)::BIGINT FROM weights
           WHERE body_pre IN (SELECT bodyId FROM annotations) AND body_post IN (SELECT bodyId FROM annotations)"""
    ).fetchone()
    seconds = time.perf_counter() - started
    rows_read = con.execute("SELECT count(*) FROM weights").fetchone()[0]
    return EngineRun("duckdb", rows_read, rows_kept, weight_sum, seconds, baseline, _peak_rss_mib())


@dataclass
class UploadRun:
    rows: int
    inserts: int
    seconds: float
    stream_seconds: float
    baseline_rss_mib: float
    peak_rss_mib: float


def run_upload(sources: Sources, store: str) -> UploadRun:
    """Our filtered stream into `synapses` of a fresh chDB store, through replace_dataset_rows."""
    import uuid

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats, filter_to_annotated_endpoints
    from connectome_assets.connectome.sources.flyem_feather import FlyemFeather
    from connectome_assets.warehouse.client import connect
    from connectome_assets.warehouse.schema import ensure_schema
    from connectome_assets.warehouse.upload import replace_dataset_rows

    _warm_up_filter()
    client = connect(f"chdb://{store}")
    ensure_schema(client, "bench")
    model = FlyemFeather({"annotations": sources.annotations, "weights": sources.weights}, {}, "bench")
    annotated = AnnotatedNeuronSet(model.read_neurons()["neuron_id"])
    baseline = _rss_mib()
    phases: dict[str, float] = {}
    filtered = filter_to_annotated_endpoints(model.iter_connections(), annotated, EndpointFilterStats())
    result = replace_dataset_rows(client, "bench", "synapses", uuid.uuid4(), _timed(filtered, phases, "stream"))
    client.close()
    return UploadRun(result.rows, result.inserts, result.seconds, phases["stream"], baseline, _peak_rss_mib())


def in_fresh_process(function: Callable[..., EngineRun | UploadRun], *args: object) -> EngineRun | UploadRun:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ---------------------------------------------------------------------------------------------
# Report


ENGINES: dict[str, Callable[[Sources], EngineRun]] = {"ours": run_ours, "polars": run_polars, "duckdb": run_duckdb}


def median_run(runs: list[EngineRun]) -> EngineRun:
    """The run with the median time; peak RSS is the largest of all runs."""
    middle = sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]
    middle.peak_rss_mib = max(run.peak_rss_mib for run in runs)
    return middle


def print_table(runs: list[EngineRun], repeat: int) -> None:
    header = f"| engine | rows read | rows kept | seconds (median of {repeat}) | Mrows/s | peak RSS MiB | RSS before MiB |"
    print(header)
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(header.count("|") - 1)) + "|")
    for run in runs:
        print(
            f"| {run.engine} | {run.rows_read:,} | {run.rows_kept:,} | {run.seconds:.2f} | {run.mrows_per_s:.1f} "
            f"| {run.peak_rss_mib:.0f} | {run.baseline_rss_mib:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the 151,871,794 weight rows (default 1.0)")
    parser.add_argument("--survive", type=float, default=0.17, help="expected share of rows kept by the filter (default 0.17)")
    parser.add_argument("--cache-dir", type=Path, default=Path(__file__).parent / ".cache", help="where generated sources are kept")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine, interleaved; the median is reported (default 3)")
    parser.add_argument("--skip-upload", action="store_true", help="do not measure the chDB upload")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1 or not 0 < args.survive <= 1 or args.repeat < 1:
        parser.error("--scale and --survive must be in (0, 1], --repeat at least 1")

    import connectome_assets

    sources = generate_sources(args.cache_dir.resolve(), args.scale, args.survive, args.seed)
    print(f"library: {Path(connectome_assets.__file__).parent}; cores: {os.cpu_count()}")
    print(f"sources: {Path(sources.weights).parent} (weights {os.path.getsize(sources.weights) / 2**30:.2f} GiB)\n")

    runs: dict[str, list[EngineRun]] = {name: [] for name in ENGINES}
    for _ in range(args.repeat):
        for name, engine in ENGINES.items():
            runs[name].append(in_fresh_process(engine, sources))
    results = [median_run(engine_runs) for engine_runs in runs.values()]
    print_table(results, args.repeat)

    ours = results[0]
    print("\nours, time by phase (median run):")
    for phase, seconds in ours.phases.items():
        print(f"  {phase}: {seconds:.2f} s")
    fastest_peer = min(results[1:], key=lambda run: run.seconds)
    print(f"\nours / fastest peer ({fastest_peer.engine}): {ours.seconds / fastest_peer.seconds:.2f}x the time")

    if not args.skip_upload:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-chdb-") as store:
            upload = in_fresh_process(run_upload, sources, store)
        insert_seconds = upload.seconds - upload.stream_seconds
        print(
            f"\nupload into chDB (replace_dataset_rows, {upload.inserts} inserts): {upload.rows:,} rows in {upload.seconds:.2f} s "
            f"= {upload.rows / upload.seconds / 1e6:.2f} M rows/s end to end; read + filter {upload.stream_seconds:.2f} s, "
            f"insert + verify + swap {insert_seconds:.2f} s = {upload.rows / insert_seconds / 1e6:.2f} M rows/s; "
            f"peak RSS {upload.peak_rss_mib:.0f} MiB (before {upload.baseline_rss_mib:.0f} MiB)"
        )

    agree = {(run.rows_read, run.rows_kept, run.weight_sum) for run in results}
    if len(agree) != 1:
        print("\nFAIL: the engines disagree on (rows read, rows kept, weight sum):", file=sys.stderr)
        for run in results:
            print(f"  {run.engine}: {run.rows_read:,}, {run.rows_kept:,}, {run.weight_sum:,}", file=sys.stderr)
        return 1
    print(f"\nall engines agree: {ours.rows_kept:,} of {ours.rows_read:,} rows kept ({ours.rows_kept / ours.rows_read:.1%}), weight sum {ours.weight_sum:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
