"""Ingest benchmark: read + endpoint filter of a male-CNS-scale Feather release, and the chDB upload.

Sources
-------
Synthetic sources at the scale of the male CNS v0.9 release are generated once (seeded, streamed
in 4 Mi-row chunks, never whole in memory) and cached under `--cache-dir`, keyed by generator
version, scale, survive share and seed:

* `annotations.feather`: 211,743 annotated bodies (`bodyId` int64 + `type`, `instance`, `status`).
* `weights.feather`: 151,871,794 x `--scale` rows of `body_pre`, `body_post` (int64) and `weight`
  (int32), LZ4-compressed Feather v2 (Arrow IPC file) in 64 Ki-row record batches, as
  pandas / pyarrow `write_feather` writes them.

Body ids are large sparse int64 values drawn from 1e4..5e11. Each endpoint of a row is, on its
own, an annotated body with probability sqrt(`--survive`) (uniform over the 211,743) and
otherwise one of 2,117,430 unannotated bodies (ten times as many, disjoint), so the expected share
of rows with BOTH endpoints annotated is `--survive` (default 0.17; the real release keeps
~25.5 M of 151.9 M rows). Rows are in random order. `--scale` shrinks the weights only: the
annotated set stays full size, so runs at different scales differ in the number of rows only.

What is measured
----------------
Every engine runs in its own fresh (spawned) process, on the same two files, and computes the same
result: rows read, rows kept, and the sum of the kept weights (a checksum that the engines kept
the same rows). The timed section starts after the engine's imports (and, for ours, after numba
has loaded its compiled kernels) and covers reading the annotated ids, building the id set, and
reading and filtering every weight row:

* ours: the `bodyId` column -> `AnnotatedNeuronSet`, then `annotated_connections(FlyemFeather(...),
  ...)` — the import's own path: Feather read -> `filter_to_annotated_endpoints` on the raw id
  columns -> canonical kept rows — consuming every kept batch and summing its weights. A separate,
  untimed pass of the bare Feather read (`iter_feather_batches`) gives the floor.
* polars: `scan_ipc` -> `filter(body_pre.is_in(ids) & body_post.is_in(ids))` -> `len()`,
  `sum(weight)`, collected with the streaming engine.
* duckdb: the Feather file as a pyarrow dataset; `WHERE body_pre IN (SELECT bodyId ...) AND
  body_post IN (...)` -> `count(*)`, `sum(weight)`, with
  `SET disabled_optimizers = 'build_side_probe_side'` (otherwise DuckDB builds its hash table on
  the 151.9 M-row side).

No engine writes its result: all three aggregate the kept rows, so the work is the same.

Per engine: wall seconds, CPU seconds (user + system, all threads), the peak RSS (`ru_maxrss` of
that process), the peak of its anonymous memory (`RssAnon`, sampled every 10 ms; RSS also counts
file pages a process maps, and Polars memory-maps the whole Feather file), and the RSS before
the timed section. With `--repeat N` the engines run N times, interleaved; the run with the
median time is shown, with the largest peaks of all N runs.

Then, unless `--skip-upload`, our filtered stream goes through `replace_dataset_rows` into the
`synapses` table of a fresh chDB store in a temporary directory (in its own process): kept rows
per second end to end, and per second of the insert + verify + swap alone.

The script exits non-zero if the engines disagree on rows read, rows kept or weight sum.

Usage: python benchmarks/ingest.py [--scale 0.01] [--survive 0.17] [--cache-dir benchmarks/.cache]
                                   [--seed 20240611] [--repeat 3] [--skip-upload]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from measure import Measurement, Section, in_fresh_process  # benchmarks/measure.py, beside this script

if TYPE_CHECKING:
    import pyarrow as pa

# numpy, pyarrow, polars, duckdb and the library are imported inside the functions that use them:
# each engine's process then loads only its own libraries, and its memory is its own.

FULL_NEURONS = 211_743
FULL_ROWS = 151_871_794
UNANNOTATED_PER_ANNOTATED = 10
ID_LOW, ID_HIGH = 10_000, 500_000_000_000
BATCH_ROWS = 1 << 16  # pandas / pyarrow `write_feather` default chunksize
GENERATE_CHUNK_ROWS = 64 * BATCH_ROWS
GENERATOR_VERSION = 1  # part of the cache key: bump it when the generated data changes
DEFAULT_SEED = 20240611


@dataclass(frozen=True)
class Sources:
    annotations: str
    weights: str


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
    # Collisions in 5e11 values are rare: 1 % spare draws leave enough distinct ids.
    bodies = np.unique(rng.integers(ID_LOW, ID_HIGH, size=int((FULL_NEURONS + n_unannotated) * 1.01)))
    rng.shuffle(bodies)
    annotated, unannotated = bodies[:FULL_NEURONS], bodies[FULL_NEURONS : FULL_NEURONS + n_unannotated]

    type_names = np.char.add("T", rng.integers(0, 8_000, size=FULL_NEURONS).astype(str))
    instances = np.char.add(type_names, np.where(rng.random(FULL_NEURONS) < 0.5, "_L", "_R"))
    status = np.where(rng.random(FULL_NEURONS) < 0.9, "Traced", "Anchor")
    neurons = pa.table(
        {
            "bodyId": pa.array(annotated, pa.int64()),
            "type": pa.array(type_names.astype(object), pa.string()),
            "instance": pa.array(instances.astype(object), pa.string()),
            "status": pa.array(status.astype(object), pa.string()),
        }
    )
    _write_feather(sources.annotations, neurons.schema, iter([neurons]))

    rows = round(FULL_ROWS * scale)
    annotated_share = math.sqrt(survive)  # per endpoint, so that both are annotated with p = survive

    def chunks() -> Iterator[pa.Table]:
        for index, start in enumerate(range(0, rows, GENERATE_CHUNK_ROWS)):
            n = min(GENERATE_CHUNK_ROWS, rows - start)
            chunk_rng = np.random.default_rng([seed, 1, index])
            endpoints = []
            for _ in ("pre", "post"):
                inside = chunk_rng.random(n) < annotated_share
                endpoints.append(
                    np.where(
                        inside,
                        annotated[chunk_rng.integers(0, len(annotated), n)],
                        unannotated[chunk_rng.integers(0, len(unannotated), n)],
                    )
                )
            weight = chunk_rng.geometric(0.3, n).astype(np.int32)
            yield pa.table({"body_pre": endpoints[0], "body_post": endpoints[1], "weight": weight})

    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32())])
    _write_feather(sources.weights, schema, chunks())
    print(f"generated {rows:,} weight rows in {folder} ({time.perf_counter() - started:.0f} s)", flush=True)
    return sources


def _write_feather(path: str, schema: pa.Schema, tables: Iterator[pa.Table]) -> None:
    """An LZ4 Feather v2 file in BATCH_ROWS record batches, renamed into place only when complete."""
    import pyarrow as pa

    partial = f"{path}.partial"
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(partial, "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        for table in tables:
            writer.write_table(table, max_chunksize=BATCH_ROWS)
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------
# Measuring inside an engine's process


@dataclass
class EngineRun:
    engine: str
    rows_read: int
    rows_kept: int
    weight_sum: int
    measured: Measurement
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def mrows_per_s(self) -> float:
        return self.rows_read / self.measured.seconds / 1e6


@dataclass
class UploadRun:
    rows: int
    inserts: int
    stream_seconds: float
    measured: Measurement


def _timed(batches: Iterator[pa.RecordBatch], into: dict[str, float], phase: str) -> Iterator[pa.RecordBatch]:
    """Pass batches through, adding the time spent producing them to into[phase]."""
    into.setdefault(phase, 0.0)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        into[phase] += time.perf_counter() - started
        if batch is None:
            return
        yield batch


def _warm_up_filter() -> None:
    """One-off per-process costs outside the timed section: numba compiling (or loading from its
    cache) the filter's kernels, and the modules pyarrow imports on first converting an array."""
    import numpy as np
    import pyarrow as pa

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet

    ids = np.arange(1, 9, dtype=np.uint64)
    AnnotatedNeuronSet(pa.chunked_array([pa.array(ids.astype(np.int64))])).endpoint_mask(ids, ids)


# ---------------------------------------------------------------------------------------------
# Engines: each runs in a fresh process


def run_ours(sources: Sources) -> EngineRun:
    import pyarrow.compute as pc
    import pyarrow.feather as feather

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats
    from connectome_assets.connectome.ingest import annotated_connections
    from connectome_assets.connectome.sources.base import iter_feather_batches
    from connectome_assets.connectome.sources.flyem_feather import WEIGHT_COLUMNS, FlyemFeather

    _warm_up_filter()
    phases: dict[str, float] = {}
    stats = EndpointFilterStats()
    weight_sum = 0
    with Section() as measured:
        started = time.perf_counter()
        annotated = AnnotatedNeuronSet(feather.read_table(sources.annotations, columns=["bodyId"])["bodyId"])
        phases["annotated ids -> AnnotatedNeuronSet"] = time.perf_counter() - started
        model = FlyemFeather({"annotations": sources.annotations, "weights": sources.weights}, {}, "bench")
        for batch in annotated_connections(model, annotated, stats):
            weight_sum += pc.sum(batch.column("weight")).as_py()
    phases["annotated_connections: Feather read -> filter -> canonical kept rows"] = measured.seconds - sum(phases.values())

    started = time.perf_counter()
    for _ in iter_feather_batches(sources.weights, WEIGHT_COLUMNS):
        pass
    phases["separate pass, not in the total: bare Feather read (iter_feather_batches)"] = time.perf_counter() - started
    return EngineRun("ours", stats.rows_read, stats.rows_kept, weight_sum, measured, phases)


def run_polars(sources: Sources) -> EngineRun:
    import polars as pl

    with Section() as measured:
        ids = pl.read_ipc(sources.annotations, columns=["bodyId"])["bodyId"].implode()
        kept = (
            pl.scan_ipc(sources.weights)
            .filter(pl.col("body_pre").is_in(ids) & pl.col("body_post").is_in(ids))
            .select(pl.len().alias("rows"), pl.col("weight").cast(pl.Int64).sum().alias("weight_sum"))
            .collect(engine="streaming")
        )
    rows_read = pl.scan_ipc(sources.weights).select(pl.len()).collect().item()
    return EngineRun("polars", rows_read, kept["rows"].item(), kept["weight_sum"].item(), measured)


def run_duckdb(sources: Sources) -> EngineRun:
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.feather as feather

    con = duckdb.connect()
    with Section() as measured:
        con.execute("SET disabled_optimizers = 'build_side_probe_side'")
        con.register("annotations", feather.read_table(sources.annotations, columns=["bodyId"]))
        con.register("weights", ds.dataset(sources.weights, format="feather"))
        rows_kept, weight_sum = con.execute(
            """SELECT count(*), sum(weight)::BIGINT FROM weights
               WHERE body_pre IN (SELECT bodyId FROM annotations) AND body_post IN (SELECT bodyId FROM annotations)"""
        ).fetchone()
    rows_read = con.execute("SELECT count(*) FROM weights").fetchone()[0]
    return EngineRun("duckdb", rows_read, rows_kept, weight_sum, measured)


def run_upload(sources: Sources, store: str) -> UploadRun:
    """Our filtered stream into `synapses` of a fresh chDB store, through replace_dataset_rows."""
    import uuid

    import pyarrow.feather as feather

    from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats
    from connectome_assets.connectome.ingest import annotated_connections
    from connectome_assets.connectome.sources.flyem_feather import FlyemFeather
    from connectome_assets.warehouse.client import connect
    from connectome_assets.warehouse.schema import ensure_schema
    from connectome_assets.warehouse.upload import replace_dataset_rows

    _warm_up_filter()
    client = connect(f"chdb://{store}")
    ensure_schema(client, "bench")
    annotated = AnnotatedNeuronSet(feather.read_table(sources.annotations, columns=["bodyId"])["bodyId"])
    model = FlyemFeather({"annotations": sources.annotations, "weights": sources.weights}, {}, "bench")
    phases: dict[str, float] = {}
    with Section() as measured:
        filtered = annotated_connections(model, annotated, EndpointFilterStats())
        result = replace_dataset_rows(client, "bench", "synapses", uuid.uuid4(), _timed(filtered, phases, "stream"))
    client.close()
    return UploadRun(result.rows, result.inserts, phases["stream"], measured)


ENGINES: dict[str, Callable[[Sources], EngineRun]] = {"ours": run_ours, "polars": run_polars, "duckdb": run_duckdb}


# ---------------------------------------------------------------------------------------------
# Report


def median_run(runs: list[EngineRun]) -> EngineRun:
    """The run with the median time, carrying the largest memory peaks of all runs."""
    middle = sorted(runs, key=lambda run: run.measured.seconds)[len(runs) // 2]
    middle.measured.peak_rss_mib = max(run.measured.peak_rss_mib for run in runs)
    middle.measured.peak_anon_mib = max(run.measured.peak_anon_mib for run in runs)
    return middle


def print_table(runs: list[EngineRun], repeat: int) -> None:
    print(
        f"| engine | rows read | rows kept | seconds (median of {repeat}) | Mrows/s | CPU s "
        "| peak RSS MiB | peak anon MiB | RSS before MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        s = run.measured
        print(
            f"| {run.engine} | {run.rows_read:,} | {run.rows_kept:,} | {s.seconds:.2f} | {run.mrows_per_s:.1f} | {s.cpu_seconds:.1f} "
            f"| {s.peak_rss_mib:.0f} | {s.peak_anon_mib:.0f} | {s.rss_before_mib:.0f} |"
        )


def print_upload(upload: UploadRun) -> None:
    s = upload.measured
    insert_seconds = s.seconds - upload.stream_seconds
    print(
        f"\nupload into chDB (replace_dataset_rows, {upload.inserts} inserts): {upload.rows:,} rows in {s.seconds:.2f} s "
        f"= {upload.rows / s.seconds / 1e6:.2f} M rows/s end to end\n"
        f"  read + filter (the stream) {upload.stream_seconds:.2f} s; insert + verify + swap {insert_seconds:.2f} s "
        f"= {upload.rows / insert_seconds / 1e6:.2f} M rows/s\n"
        f"  peak RSS {s.peak_rss_mib:.0f} MiB, peak anon {s.peak_anon_mib:.0f} MiB, RSS before {s.rss_before_mib:.0f} MiB "
        "(chDB's engine runs in the process)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Read + endpoint filter of a male-CNS-scale Feather release: ours vs Polars vs DuckDB, and the chDB upload.")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the 151,871,794 weight rows (default 1.0)")
    parser.add_argument("--survive", type=float, default=0.17, help="expected share of rows the filter keeps (default 0.17)")
    parser.add_argument("--cache-dir", type=Path, default=Path(__file__).parent / ".cache", help="where generated sources are kept")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine, interleaved; the median is shown (default 3)")
    parser.add_argument("--skip-upload", action="store_true", help="do not measure the chDB upload")
    args = parser.parse_args(argv)
    if not (0 < args.scale <= 1 and 0 < args.survive <= 1 and args.repeat >= 1):
        parser.error("--scale and --survive must be in (0, 1], --repeat at least 1")

    import connectome_assets

    sources = generate_sources(args.cache_dir.resolve(), args.scale, args.survive, args.seed)
    print(f"library: {Path(connectome_assets.__file__).parent}; {os.cpu_count()} cores")
    print(f"sources: {Path(sources.weights).parent} (weights {os.path.getsize(sources.weights) / 2**30:.2f} GiB)\n")

    runs: dict[str, list[EngineRun]] = {name: [] for name in ENGINES}
    for _ in range(args.repeat):
        for name, engine in ENGINES.items():
            runs[name].append(in_fresh_process(engine, sources))
    results = [median_run(engine_runs) for engine_runs in runs.values()]
    print_table(results, args.repeat)

    ours, fastest_peer = results[0], min(results[1:], key=lambda run: run.measured.seconds)
    print("\nours, by phase (median run):")
    for phase, seconds in ours.phases.items():
        print(f"  {phase}: {seconds:.2f} s")
    print(f"\nours takes {ours.measured.seconds / fastest_peer.measured.seconds:.2f}x the time of the fastest peer ({fastest_peer.engine})")

    if not args.skip_upload:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-chdb-") as store:
            print_upload(in_fresh_process(run_upload, sources, store))

    if len({(run.rows_read, run.rows_kept, run.weight_sum) for run in results}) != 1:
        print("\nFAIL: the engines disagree on (rows read, rows kept, weight sum):", file=sys.stderr)
        for run in results:
            print(f"  {run.engine}: {run.rows_read:,}, {run.rows_kept:,}, {run.weight_sum:,}", file=sys.stderr)
        return 1
    print(
        f"\nall engines agree: {ours.rows_kept:,} of {ours.rows_read:,} rows kept "
        f"({ours.rows_kept / ours.rows_read:.1%}), kept weight sum {ours.weight_sum:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
