"""Volume benchmarks: 2x2x2 mode downres of the real pinky40 volume beside tinybrain and tensorstore,
DVID block decode throughput on the real male CNS export shard, the two s0 writers on it, and one
downres shard built above it, ours beside tensorstore's.

downres
-------
The input is the real dense segmentation `../shared/data/volumes/pinky40-512.npy.ckl.gz` (512^3
uint32, Fortran order, 2,523 labels), decoded once with crackle into a temporary directory
(deleted at the end; nothing is written into the repository). Each engine runs in its own fresh
(spawned) process, loads the volume, converts it to the measured dtype in Fortran order (x
fastest: the order tinybrain's 2x2x2 path needs; ours is as fast on either order) and
downsamples it once more untimed to load compiled code, so the timed section covers exactly one
downsampling call that returns a new array:

* ours: `downsample_mode(volume, rule)` (connectome_assets.volumes.downres), rule "tensorstore"
  (most frequent, ties -> smallest label) and "dvid" (zeros do not vote), with the default
  threads (the CPUs the process may use), and the tensorstore rule again with `threads=1`.
* tinybrain: `downsample_segmentation(volume, factor=(2, 2, 2))` (C++, single thread; ties ->
  the first label in its scan order).
* tensorstore: `ts.downsample(ts.array(volume), [2, 2, 2], method="mode").read().result()`
  (`ts.array` shares the numpy buffer; creating it is outside the timed section).

Throughput is Gvox/s of INPUT voxels (512^3 / seconds). Per engine: wall seconds, CPU seconds
(user + system, all threads), peak RSS of the process (`ru_maxrss`: includes the loaded input,
1 GiB as uint64), peak anonymous memory (sampled every 10 ms) and the RSS before the timed
section. With `--repeat N` the engines run N times, interleaved; the run with the median time is
shown, with the largest peaks of all N runs.

Checks (on the outputs of the first round, in a separate process): ours (tensorstore rule) must
equal tensorstore's output exactly, for each dtype, and the uint32 and uint64 results must be the
same labels; every voxel where tinybrain differs from ours must be a tie (both labels equally
frequent in its 2x2x2 block); every voxel where the dvid rule differs from the tensorstore rule
must have a zero in its block and match a Counter-based reference of the dvid rule. The script
exits non-zero if any check fails.

decode
------
`DvidShardReader(arrow, csv)` on the real Go-written shard `../shared/data/dvid/30720_24576_28672.arrow`
(258 blocks of 64^3, index `-newformat.csv`), in a fresh process, after one untimed decode:

* end to end: `reader.decode(coordinate)` for every block (Arrow read + zstd + `decode_block`
  with the agglomerated labels table);
* decode alone: `decode_block(block, labels)` for every block, the zstd-decompressed blocks and
  label tables prepared beforehand.

Each is run for `--decode-passes` passes over the 258 blocks; the median pass gives blocks/s and
GB/s of decoded voxels (uint64, 2 MiB per block; GB = 1e9 bytes). CPU seconds and peaks are
over all passes. Both must produce identical voxels (checked).

writers
-------
`write_dvid_shard` (the s0 path) with each writer on the same real shard as s1 of the male CNS spec
(`mcns-ng-specs.json`, raw chunk data; `--data-encoding gzip` to gzip it), side by side in one run:

* transcode: Arrow row + zstd + `transcode_chunk` (DVID block -> compressed_segmentation bytes)
  + the `neuroglancer_uint64_sharded` kvstore in one transaction + commit;
* array: Arrow row + zstd + decode + label mapping + transpose + tensorstore
  `neuroglancer_precomputed` writes in one transaction + commit (the cseg encode happens there).

Each writer runs in a fresh process pinned to one core (`os.sched_setaffinity`, tensorstore's
threads included), one untimed pass first, then `--write-passes` passes, each end to end from
opening the Arrow file to the committed shard file of a fresh local volume: blocks/s per core of the
median pass, the breakdown (read + zstd, decode, transcode, kvstore write + commit: medians), CPU
seconds and peak RSS. The two writers' last outputs must hold the same chunks with the same bytes
(`sharding.shard_chunk_data`), else the script exits non-zero.

downres-shard
-------------
One downres output shard end to end, on real data: the real shard written as s1 of the male CNS
spec (transcode writer, untimed), then the s2 shard above it (258 parent chunks -> 51 chunks):

* ours: `pyramid.write_downres_shard` for the planned job (parent shard index, ranged reads of the
  parent chunks, `cseg_downsample` straight from their compressed_segmentation bytes,
  `encode_chunk`, `ShardWriter`: one transaction + commit);
* tensorstore: `ts.downsample(s1, [2, 2, 2, 1], method="mode")` read and written into s2 through
  the `neuroglancer_precomputed` driver over the shard's chunks, one transaction + commit (the way
  tensorstore-export builds a downres scale: it decodes the parent to uint64 and encodes at commit).

Each in a fresh process pinned to one core, one untimed pass, then `--shard-passes` passes into the
same destination; the median pass gives output chunks/s and parent chunks/s per core. The two
shard files must hold the same chunks with the same bytes, else the script exits non-zero.

Usage: python benchmarks/volumes.py [--only downres|decode|writers|downres-shard] [--repeat 5] [--skip-uint32] [--decode-passes 10]
                                    [--write-passes 5] [--data-encoding raw|gzip] [--shard-passes 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from measure import Measurement, Section, in_fresh_process  # benchmarks/measure.py, beside this script

# numpy, tinybrain, tensorstore, crackle and the library are imported inside the functions that
# use them: each engine's process then loads only its own libraries, and its memory is its own.

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PINKY40 = SHARED / "volumes" / "pinky40-512.npy.ckl.gz"
SHARD = SHARED / "dvid" / "30720_24576_28672.arrow"
SHARD_INDEX = SHARED / "dvid" / "30720_24576_28672-newformat.csv"
SPEC = SHARED / "dvid" / "mcns-ng-specs.json"


# ---------------------------------------------------------------------------------------------
# downres


@dataclass
class DownresRun:
    engine: str
    dtype: str
    voxels: int
    measured: Measurement
    output: str | None = None  # .npy of the output, kept from the first round for the checks

    @property
    def gvox_per_s(self) -> float:
        return self.voxels / self.measured.seconds / 1e9


def prepare_volume(directory: str) -> tuple[str, tuple[int, int, int], int]:
    """pinky40 decoded to a Fortran-order uint32 .npy in `directory`: (path, shape, labels)."""
    import gzip

    import crackle
    import numpy as np

    volume = crackle.decompress(gzip.open(PINKY40).read())
    path = os.path.join(directory, "pinky40.npy")
    np.save(path, np.asfortranarray(volume))
    return path, tuple(volume.shape), len(np.unique(volume))


def _load(volume_path: str, dtype: str):
    import numpy as np

    return np.load(volume_path).astype(dtype, order="F")


def _keep(run: DownresRun, output, output_dir: str | None) -> DownresRun:
    import numpy as np

    if output_dir is not None:
        run.output = os.path.join(output_dir, f"{run.engine}-{run.dtype}.npy".replace(" ", "_"))
        np.save(run.output, output)
    return run


def run_ours(volume_path: str, dtype: str, rule: str, threads: int | None, output_dir: str | None) -> DownresRun:
    from connectome_assets.volumes.downres import downsample_mode

    volume = _load(volume_path, dtype)
    downsample_mode(volume[:64, :64, :64].copy(order="F"), rule)  # load the compiled kernel
    with Section() as measured:
        output = downsample_mode(volume, rule, threads=threads)
    name = f"ours [{rule}]" + (" 1 thread" if threads == 1 else "")
    return _keep(DownresRun(name, dtype, volume.size, measured), output, output_dir)


def run_tinybrain(volume_path: str, dtype: str, output_dir: str | None) -> DownresRun:
    import tinybrain

    volume = _load(volume_path, dtype)  # Fortran order: tinybrain's (2,2,2) path is wrong on C order
    tinybrain.downsample_segmentation(volume[:64, :64, :64].copy(order="F"), factor=(2, 2, 2))
    with Section() as measured:
        output = tinybrain.downsample_segmentation(volume, factor=(2, 2, 2))[0]
    return _keep(DownresRun("tinybrain", dtype, volume.size, measured), output, output_dir)


def run_tensorstore(volume_path: str, dtype: str, output_dir: str | None) -> DownresRun:
    import tensorstore as ts

    volume = _load(volume_path, dtype)
    ts.downsample(ts.array(volume[:64, :64, :64].copy(order="F")), [2, 2, 2], method="mode").read().result()
    store = ts.array(volume)  # shares the numpy buffer
    with Section() as measured:
        output = ts.downsample(store, [2, 2, 2], method="mode").read().result()
    return _keep(DownresRun("tensorstore", dtype, volume.size, measured), output, output_dir)


def check_downres(volume_path: str, outputs: dict[tuple[str, str], str]) -> list[str]:
    """Agreement checks on the first round's outputs; returns report lines, 'FAIL' in failed ones."""
    from collections import Counter

    import numpy as np

    source = np.load(volume_path)
    # (x, y, z, 8): the voxels of every 2x2x2 block (512 is even: no partial blocks here); the
    # C-order reshape is by index, whatever the memory order, so x = 2 * block_x + offset_x.
    nx, ny, nz = (n // 2 for n in source.shape)
    blocks = source.reshape(nx, 2, ny, 2, nz, 2).transpose(0, 2, 4, 1, 3, 5).reshape(nx, ny, nz, 8)
    lines = []

    def load(engine: str, dtype: str) -> np.ndarray | None:
        path = outputs.get((engine, dtype))
        return None if path is None else np.load(path)

    dtypes = sorted({dtype for _, dtype in outputs})
    ours_by_dtype = {}
    for dtype in dtypes:
        ours = load("ours [tensorstore]", dtype)
        ours_by_dtype[dtype] = ours
        tensorstore = load("tensorstore", dtype)
        if ours is not None and tensorstore is not None:
            differ = int(np.count_nonzero(ours != tensorstore))
            lines.append(f"{dtype}: ours [tensorstore] vs tensorstore: {differ:,} voxels differ" + (" FAIL" if differ else " (identical)"))
        single = load("ours [tensorstore] 1 thread", dtype)
        if ours is not None and single is not None:
            differ = int(np.count_nonzero(ours != single))
            lines.append(f"{dtype}: ours threaded vs 1 thread: {differ:,} voxels differ" + (" FAIL" if differ else " (identical)"))
        tiny = load("tinybrain", dtype)
        if ours is not None and tiny is not None:
            where = np.nonzero(ours != tiny)
            mine = blocks[where]
            ours_votes = (mine == ours[where][:, None].astype(mine.dtype)).sum(1)
            tiny_votes = (mine == tiny[where][:, None].astype(mine.dtype)).sum(1)
            not_ties = int(np.count_nonzero(ours_votes != tiny_votes))
            lines.append(
                f"{dtype}: tinybrain differs from ours [tensorstore] at {len(where[0]):,} of {ours.size:,} voxels; "
                + (f"{not_ties:,} are not ties FAIL" if not_ties else "all are ties (tinybrain keeps the first tied label in scan order)")
            )
        dvid = load("ours [dvid]", dtype)
        if ours is not None and dvid is not None:
            where = np.nonzero(dvid != ours)
            mine = blocks[where]
            without_zero = int(np.count_nonzero((mine != 0).all(1)))
            wrong = 0
            for values, got in zip(mine.tolist(), dvid[where].tolist()):
                votes = Counter(v for v in values if v != 0)
                most = max(votes.values()) if votes else 0
                expected = min(v for v, c in votes.items() if c == most) if votes else 0
                wrong += got != expected
            fail = " FAIL" if (without_zero or wrong) else ""
            lines.append(
                f"{dtype}: dvid rule differs from the tensorstore rule at {len(where[0]):,} voxels, "
                f"{without_zero:,} of them without a zero in the block, {wrong:,} unlike the Counter reference{fail}"
            )
    if len(ours_by_dtype) == 2 and all(v is not None for v in ours_by_dtype.values()):
        a, b = ours_by_dtype.values()
        differ = int(np.count_nonzero(a.astype(np.uint64) != b.astype(np.uint64)))
        lines.append(f"ours [tensorstore] uint32 vs uint64: {differ:,} voxels differ" + (" FAIL" if differ else " (identical labels)"))
    return lines


def median_run(runs: list[DownresRun]) -> DownresRun:
    """The run with the median time, carrying the largest memory peaks of all runs."""
    middle = sorted(runs, key=lambda run: run.measured.seconds)[len(runs) // 2]
    middle.measured.peak_rss_mib = max(run.measured.peak_rss_mib for run in runs)
    middle.measured.peak_anon_mib = max(run.measured.peak_anon_mib for run in runs)
    return middle


def downres_section(repeat: int, dtypes: list[str]) -> bool:
    with tempfile.TemporaryDirectory(prefix="volumes-bench-") as directory:
        volume_path, shape, labels = in_fresh_process(prepare_volume, directory)
        voxels = shape[0] * shape[1] * shape[2]
        print(f"pinky40: {shape[0]}x{shape[1]}x{shape[2]} = {voxels:,} voxels, {labels:,} distinct values with 0 (decoded into {directory})\n")
        engines: list[tuple[str, Callable[..., DownresRun], tuple]] = []
        for dtype in dtypes:
            engines += [
                (dtype, run_ours, ("tensorstore", None)),
                (dtype, run_ours, ("dvid", None)),
                (dtype, run_tinybrain, ()),
                (dtype, run_tensorstore, ()),
            ]
            if dtype == "uint64":
                engines.insert(1, (dtype, run_ours, ("tensorstore", 1)))
        runs: dict[int, list[DownresRun]] = {index: [] for index in range(len(engines))}
        for round_number in range(repeat):
            for index, (dtype, engine, extra) in enumerate(engines):
                output_dir = directory if round_number == 0 else None
                runs[index].append(in_fresh_process(engine, volume_path, dtype, *extra, output_dir))
            print(f"  round {round_number + 1}/{repeat} done", flush=True)
        results = [median_run(engine_runs) for engine_runs in runs.values()]
        outputs = {(run.engine, run.dtype): run.output for engine_runs in runs.values() for run in engine_runs if run.output}
        checks = in_fresh_process(check_downres, volume_path, outputs)

    print(
        f"\n| engine | dtype | seconds (median of {repeat}) | Gvox/s (input) | CPU s | peak RSS MiB | peak anon MiB | RSS before MiB |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for run in results:
        s = run.measured
        print(
            f"| {run.engine} | {run.dtype} | {s.seconds:.3f} | {run.gvox_per_s:.2f} | {s.cpu_seconds:.2f} "
            f"| {s.peak_rss_mib:,.0f} | {s.peak_anon_mib:,.0f} | {s.rss_before_mib:,.0f} |"
        )
    print("\nall runs, seconds (interleaved rounds):")
    for run_list in runs.values():
        print(f"  {run_list[0].engine} {run_list[0].dtype}: " + ", ".join(f"{run.measured.seconds:.3f}" for run in run_list))
    by_key = {(run.engine, run.dtype): run for run in results}
    print()
    for dtype in dtypes:
        ours, tiny, tstore = (by_key.get((name, dtype)) for name in ("ours [tensorstore]", "tinybrain", "tensorstore"))
        if ours and tiny and tstore:
            print(
                f"{dtype}: ours [tensorstore] {ours.gvox_per_s:.2f} Gvox/s = {ours.gvox_per_s / tiny.gvox_per_s:.2f}x tinybrain "
                f"({tiny.gvox_per_s:.2f}), {ours.gvox_per_s / tstore.gvox_per_s:.1f}x tensorstore ({tstore.gvox_per_s:.2f})"
            )
    print("\nchecks:")
    for line in checks:
        print(f"  {line}")
    return not any("FAIL" in line for line in checks)


# ---------------------------------------------------------------------------------------------
# decode


@dataclass
class DecodeRun:
    blocks: int
    voxel_bytes: int
    end_to_end_passes: list[float] = field(default_factory=list)
    decode_passes: list[float] = field(default_factory=list)
    end_to_end: Measurement = field(default_factory=Measurement)
    decode_only: Measurement = field(default_factory=Measurement)
    identical: bool = False


def run_decode(passes: int) -> DecodeRun:
    import hashlib

    import zstandard

    from connectome_assets.volumes.block_codec import decode_block
    from connectome_assets.volumes.shard_reader import DvidShardReader

    reader = DvidShardReader(SHARD, SHARD_INDEX)
    coordinates = list(reader.chunks)
    reader.decode(coordinates[0])  # load the compiled decoder
    decompressor = zstandard.ZstdDecompressor()
    prepared = []
    for coordinate in coordinates:
        record = reader.read(coordinate)
        prepared.append((decompressor.decompress(record.compressed_block, max_output_size=record.uncompressed_size), record.labels))
    run = DecodeRun(len(coordinates), 0)

    with Section() as run.end_to_end:
        for _ in range(passes):
            started = time.perf_counter()
            for coordinate in coordinates:
                reader.decode(coordinate)
            run.end_to_end_passes.append(time.perf_counter() - started)
    with Section() as run.decode_only:
        for _ in range(passes):
            started = time.perf_counter()
            for block, labels in prepared:
                decode_block(block, labels)
            run.decode_passes.append(time.perf_counter() - started)

    # untimed: both paths give the same voxels
    digest_a, digest_b = hashlib.sha256(), hashlib.sha256()
    for coordinate, (block, labels) in zip(coordinates, prepared):
        voxels = reader.decode(coordinate)
        run.voxel_bytes += voxels.nbytes
        digest_a.update(voxels.tobytes())
        digest_b.update(decode_block(block, labels).tobytes())
    run.identical = digest_a.digest() == digest_b.digest()
    return run


def decode_section(passes: int) -> bool:
    run = in_fresh_process(run_decode, passes)
    print(f"\nshard {SHARD.name}: {run.blocks} blocks, {run.voxel_bytes / 1e6:,.0f} MB of decoded uint64 voxels per pass; {passes} passes\n")
    print("| path | median pass s | blocks/s | GB/s of voxels | CPU s (all passes) | peak RSS MiB | peak anon MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, pass_seconds, measured in (
        ("end to end: read + zstd + decode_block (`DvidShardReader.decode`)", run.end_to_end_passes, run.end_to_end),
        ("decode_block alone (zstd done beforehand)", run.decode_passes, run.decode_only),
    ):
        median = statistics.median(pass_seconds)
        print(
            f"| {name} | {median:.4f} | {run.blocks / median:,.0f} | {run.voxel_bytes / median / 1e9:.2f} "
            f"| {measured.cpu_seconds:.2f} | {measured.peak_rss_mib:,.0f} | {measured.peak_anon_mib:,.0f} |"
        )
    print(f"\ndecode check: end to end and decode_block alone give {'identical' if run.identical else 'DIFFERENT (FAIL)'} voxels")
    return run.identical


@dataclass
class WriterRun:
    writer: str
    core: int
    blocks: int
    written: int = 0
    passes: list[float] = field(default_factory=list)  # end to end: open the Arrow file .. shard file committed
    read: list[float] = field(default_factory=list)  # Arrow row + zstd
    decode: list[float] = field(default_factory=list)  # array: DVID block -> uint64 voxels
    transcode: list[float] = field(default_factory=list)  # transcode: DVID block -> compressed_segmentation bytes
    write: list[float] = field(default_factory=list)  # tensorstore writes + commit
    measured: Measurement = field(default_factory=Measurement)
    output: str = ""  # the last pass's volume, for the chunk-for-chunk check

    @property
    def blocks_per_second(self) -> float:
        return self.blocks / statistics.median(self.passes)


def writer_scale(data_encoding: str | None):
    """The real shard's scale: s1 of the male CNS spec, with the spec's data encoding or `data_encoding`."""
    import json

    from connectome_assets.volumes.precomputed import info_from_spec, scales_of

    info = info_from_spec(json.loads(SPEC.read_text()), str(SPEC))
    if data_encoding:
        for scale in info["scales"]:
            scale["sharding"]["data_encoding"] = data_encoding
    return info, scales_of(info)[1]


def run_writer(writer: str, core: int, passes: int, root: str, data_encoding: str | None) -> WriterRun:
    """`write_dvid_shard(writer=...)` on the real shard, pinned to one core: one untimed pass (compiled
    code loaded), then `passes` passes, each from opening the Arrow file to the committed shard file
    of a fresh local volume."""
    from connectome_assets.volumes.precomputed import destination_url, write_info
    from connectome_assets.volumes.s0 import write_dvid_shard
    from connectome_assets.volumes.shard_reader import DvidShardReader

    os.sched_setaffinity(0, {core})  # before tensorstore starts its threads: they all share this core
    info, scale = writer_scale(data_encoding)
    run = WriterRun(writer, core, 0)
    warm = destination_url(f"{root}/{writer}-warm-up")
    write_info(warm, info)
    write_dvid_shard(DvidShardReader(SHARD, SHARD_INDEX), warm, scale, writer=writer)
    with Section() as run.measured:
        for index in range(passes):
            run.output = destination_url(f"{root}/{writer}-{index}")
            write_info(run.output, info)
            started = time.perf_counter()
            reader = DvidShardReader(SHARD, SHARD_INDEX)
            result = write_dvid_shard(reader, run.output, scale, writer=writer)
            reader.close()
            run.passes.append(time.perf_counter() - started)
            run.blocks, run.written = result.chunks, result.written
            for name in ("read", "decode", "transcode", "write"):
                getattr(run, name).append(getattr(result, f"{name}_seconds"))
    return run


def compare_shards(first: str, second: str, scale, names: tuple[str, str]) -> list[str]:
    """Two local volumes' shard files of `scale`: the same files, each with the same chunk ids and
    data bytes (`names` say which volume is which); a line per file, FAIL where they differ."""
    from connectome_assets.volumes.precomputed import shard_files
    from connectome_assets.volumes.sharding import shard_chunk_data

    files = shard_files(first, scale.key)
    if files != shard_files(second, scale.key) or not files:
        return [f"shard files differ: {names[0]} {sorted(files)}, {names[1]} {sorted(shard_files(second, scale.key))} FAIL"]
    lines = []
    for name in sorted(files):
        a = shard_chunk_data(Path(first[len("file://") :], scale.key, name).read_bytes(), scale.sharding)
        b = shard_chunk_data(Path(second[len("file://") :], scale.key, name).read_bytes(), scale.sharding)
        differ = sum(a.get(chunk_id) != b.get(chunk_id) for chunk_id in a.keys() | b.keys())
        lines.append(f"{name}: {len(a):,} chunks ({names[0]}) vs {len(b):,} ({names[1]}), {differ:,} differ" + (" FAIL" if differ or not a else " (identical)"))
    return lines


def report_checks(passes: dict[str, list[float]], checks: list[str], of: str) -> bool:
    """Print each path's pass times and the chunk-for-chunk checks; True when every check passed."""
    print("all passes, seconds: " + "; ".join(f"{name} " + ", ".join(f"{s:.3f}" for s in times) for name, times in passes.items()))
    print(f"\nchecks (the last pass of each {of}, chunk for chunk):")
    for line in checks:
        print(f"  {line}")
    return bool(checks) and not any("FAIL" in line for line in checks)


def check_writers(transcoded: str, arrays: str, data_encoding: str | None) -> list[str]:
    """The two writers' shard files, chunk for chunk."""
    return compare_shards(transcoded, arrays, writer_scale(data_encoding)[1], ("transcode", "array"))


def writers_section(passes: int, data_encoding: str | None) -> bool:
    core = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="s0-writers-") as root:
        runs = [in_fresh_process(run_writer, writer, core, passes, root, data_encoding) for writer in ("transcode", "array")]
        checks = in_fresh_process(check_writers, runs[0].output, runs[1].output, data_encoding)
    _, scale = in_fresh_process(writer_scale, data_encoding)
    print(
        f"\ns0 writers: {SHARD.name} as s1 of {SPEC.name} ({scale.sharding.data_encoding} data), {runs[0].blocks} blocks -> one output shard,"
        f" one transaction; each writer in a fresh process pinned to core {core}; median of {passes} passes, end to end"
        " (Arrow file opened .. shard file committed)\n"
    )
    print("| writer | blocks/s per core | median s | read + zstd s | decode s | transcode s | kvstore write + commit s | CPU s (all passes) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run.writer} | {run.blocks_per_second:,.0f} | {statistics.median(run.passes):.3f} | {statistics.median(run.read):.3f}"
            f" | {statistics.median(run.decode):.3f} | {statistics.median(run.transcode):.3f} | {statistics.median(run.write):.3f}"
            f" | {run.measured.cpu_seconds:.2f} | {run.measured.peak_rss_mib:,.0f} |"
        )
    print(f"\ntranscode / array: {runs[0].blocks_per_second / runs[1].blocks_per_second:.2f}x")
    return report_checks({run.writer: run.passes for run in runs}, checks, "writer")


# ---------------------------------------------------------------------------------------------
# downres-shard


@dataclass
class ShardRun:
    engine: str
    core: int
    chunks: int = 0  # output chunks with parent data
    parents: int = 0  # parent chunks read
    passes: list[float] = field(default_factory=list)
    measured: Measurement = field(default_factory=Measurement)

    @property
    def seconds(self) -> float:
        return statistics.median(self.passes)


def build_parent(root: str) -> str:
    """The real shard as s1 of the male CNS spec, in a fresh local volume; its destination URL."""
    from connectome_assets.volumes.precomputed import destination_url, write_info
    from connectome_assets.volumes.s0 import write_dvid_shard
    from connectome_assets.volumes.shard_reader import DvidShardReader

    info, scale = writer_scale(None)
    dest = destination_url(f"{root}/parent")
    write_info(dest, info)
    write_dvid_shard(DvidShardReader(SHARD, SHARD_INDEX), dest, scale)
    return dest


def run_downres_shard(engine: str, core: int, passes: int, parent_dest: str, root: str) -> tuple[ShardRun, str]:
    """`engine` builds the s2 shard(s) above the real shard: one untimed pass, then `passes` passes."""
    import shutil

    import tensorstore as ts

    from connectome_assets.volumes.plan import plan_downres_scale
    from connectome_assets.volumes.precomputed import chunk_box, open_scale, read_info, scales_of
    from connectome_assets.volumes.pyramid import parent_chunks_of, write_downres_shard

    os.sched_setaffinity(0, {core})  # before tensorstore starts its threads: they all share this core
    dest = f"{parent_dest.rstrip('/')}-{engine}/"
    shutil.copytree(parent_dest[len("file://") :], dest[len("file://") :])
    scales = scales_of(read_info(dest))
    jobs = plan_downres_scale(dest, 2).shards
    below = {job.output_file: parent_chunks_of(dest, scales[1], scales[2], job) for job in jobs}
    run = ShardRun(engine, core, sum(len(b) for b in below.values()), sum(len(p) for b in below.values() for p in b.values()))

    if engine == "ours":

        def one_pass() -> None:
            for job in jobs:
                write_downres_shard(dest, scales[1], scales[2], job)

    else:
        boxes = {name: [chunk_box(chunk, scales[2]) for chunk in chunks] for name, chunks in below.items()}

        def one_pass() -> None:
            source = ts.downsample(open_scale(dest, 1), [2, 2, 2, 1], method="mode")
            target = open_scale(dest, 2)
            for name in below:  # one transaction per output shard, as ours
                txn = ts.Transaction()
                staged = target.with_transaction(txn)
                writes = [staged[a[0] : b[0], a[1] : b[1], a[2] : b[2], 0].write(source[a[0] : b[0], a[1] : b[1], a[2] : b[2], 0]) for a, b in boxes[name]]
                for write in writes:
                    write.result()
                txn.commit_async().result()

    one_pass()
    with Section() as run.measured:
        for _ in range(passes):
            started = time.perf_counter()
            one_pass()
            run.passes.append(time.perf_counter() - started)
    return run, dest


def check_downres_shards(ours: str, theirs: str) -> list[str]:
    """The two s2 outputs, chunk for chunk."""
    from connectome_assets.volumes.precomputed import read_info, scales_of

    return compare_shards(ours, theirs, scales_of(read_info(ours))[2], ("ours", "tensorstore"))


def downres_shard_section(passes: int) -> bool:
    core = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="downres-shard-") as root:
        parent = in_fresh_process(build_parent, root)
        results = [in_fresh_process(run_downres_shard, engine, core, passes, parent, root) for engine in ("ours", "tensorstore")]
        checks = in_fresh_process(check_downres_shards, results[0][1], results[1][1])
    runs = [run for run, _ in results]
    print(
        f"\ndownres shard: s2 above {SHARD.name} (as s1 of {SPEC.name}): {runs[0].parents} parent chunks -> {runs[0].chunks} chunks;"
        f" each engine in a fresh process pinned to core {core}; median of {passes} passes, one transaction per output shard\n"
    )
    print("| engine | output chunks/s per core | parent chunks/s per core | median s | CPU s (all passes) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run.engine} | {run.chunks / run.seconds:,.0f} | {run.parents / run.seconds:,.0f} | {run.seconds:.3f}"
            f" | {run.measured.cpu_seconds:.2f} | {run.measured.peak_rss_mib:,.0f} |"
        )
    print(f"\nours / tensorstore: {runs[1].seconds / runs[0].seconds:.2f}x")
    return report_checks({run.engine: run.passes for run in runs}, checks, "engine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mode downres of pinky40 beside tinybrain and tensorstore; DVID block decode throughput; the s0 writers side by side.")
    parser.add_argument("--only", choices=("downres", "decode", "writers", "downres-shard"), help="run one section only")
    parser.add_argument("--repeat", type=int, default=5, help="downres runs per engine, interleaved; the median is shown (default 5)")
    parser.add_argument("--skip-uint32", action="store_true", help="downres of the uint64 volume only")
    parser.add_argument("--decode-passes", type=int, default=10, help="passes over the shard's blocks per decode path (default 10)")
    parser.add_argument("--write-passes", type=int, default=5, help="s0 writes of the real shard per writer (default 5)")
    parser.add_argument("--data-encoding", choices=("raw", "gzip"), default=None, help="writers: the shard's chunk data encoding (default: the spec's, raw)")
    parser.add_argument("--shard-passes", type=int, default=9, help="downres-shard: passes per engine (default 9)")
    args = parser.parse_args(argv)
    if min(args.repeat, args.decode_passes, args.write_passes, args.shard_passes) < 1:
        parser.error("--repeat, --decode-passes, --write-passes and --shard-passes must be at least 1")
    for path in (PINKY40, SHARD, SHARD_INDEX, SPEC):
        if not path.is_file():
            print(f"reference data not found: {path} (the benchmark needs ../shared/data beside the repository)", file=sys.stderr)
            return 2

    import connectome_assets

    print(f"library: {Path(connectome_assets.__file__).parent}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}\n")
    ok = True
    if args.only in (None, "downres"):
        ok &= downres_section(args.repeat, ["uint64"] if args.skip_uint32 else ["uint64", "uint32"])
    if args.only in (None, "decode"):
        ok &= decode_section(args.decode_passes)
    if args.only in (None, "writers"):
        ok &= writers_section(args.write_passes, args.data_encoding)
    if args.only in (None, "downres-shard"):
        ok &= downres_shard_section(args.shard_passes)
    if not ok:
        print("\nFAIL: engines disagree where they must agree (see the checks above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
