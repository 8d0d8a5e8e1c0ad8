"""The DVID -> compressed_segmentation transcoder alone, on the real male CNS export shard; and the
encoder from voxels (the downres scales) beside tensorstore's encode at commit.

transcode
---------

`../shared/data/dvid/30720_24576_28672.arrow` (258 Go-written blocks of 64^3), in a fresh process,
one thread. The blocks are read and zstd-decompressed beforehand (untimed), then each path runs
over all 258 blocks per pass, after one untimed pass that loads the compiled code:

* `transcode_chunk(block, labels)`: the agglomerated labels (the `labels` column), as s0 writes them;
* `transcode_chunk(block, None)`: the supervoxels;
* the reference (`reference_transcode_chunk`: `decode_block` to uint64 voxels, then the
  `compressed-segmentation` package's encoder), labels, for scale.

Blocks/s of the median of `--passes` passes (and its µs per block), CPU seconds of all passes.
Checked in the same run: both transcoder paths give exactly the reference's bytes for every block.
zstd, Arrow reading and the shard write are not in these figures (`benchmarks/volumes.py` has the
end to end path).

encode
------
The downres scales have voxels, not DVID blocks: `encode_chunk(voxels)` (compressed_segmentation from
uint64 voxels) against tensorstore's own encode. The input is real downsampled data: the shard's
blocks decoded with their labels, each 2x2x2 group of them (absent blocks 0) downsampled by mode
(`downsample_mode`) into one 64³ chunk of the next scale, C-ordered (x, y, z) as
`pyramid.write_downres_shard` gets them from tensorstore; prepared untimed. In one fresh process
pinned to one core (tensorstore's threads too), one untimed pass first, then per pass over all
chunks, each into a fresh local volume (scale 2 of `mcns-ng-specs.json`, one shard):

* `encode_chunk` alone;
* `encode_chunk` + `ShardWriter` (the `neuroglancer_uint64_sharded` kvstore, one transaction, commit);
* tensorstore: the voxels written through `neuroglancer_precomputed` in one transaction + commit
  (tensorstore encodes at commit), as the array paths write.

Chunks/s of the median pass. Checked in the same run: the two written shards hold the same chunk ids
with the same bytes, and those bytes are `encode_chunk`'s.

Usage: python benchmarks/transcode.py [--only transcode|encode] [--passes 20] [--encode-passes 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import Measurement, Section, in_fresh_process  # benchmarks/measure.py, beside this script

SHARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "dvid" / "30720_24576_28672.arrow"
SHARD_INDEX = SHARD.with_name(f"{SHARD.stem}-newformat.csv")
SPEC = SHARD.with_name("mcns-ng-specs.json")
ENCODE_SCALE = 2  # the downsampled chunks' scale in SPEC


@dataclass
class PathRuns:
    """Passes of each measured path over the same `items` (blocks or chunks)."""

    items: int = 0
    chunk_bytes: int = 0
    passes: dict[str, list[float]] = field(default_factory=dict)
    measured: dict[str, Measurement] = field(default_factory=dict)
    identical: bool = False


def run_transcode(passes: int) -> PathRuns:
    import zstandard

    from connectome_assets.volumes.cseg_transcode import reference_transcode_chunk, transcode_chunk
    from connectome_assets.volumes.shard_reader import DvidShardReader

    reader = DvidShardReader(SHARD, SHARD_INDEX)
    decompressor = zstandard.ZstdDecompressor()
    blocks = []
    for coordinate in reader.chunks:
        record = reader.read(coordinate)
        blocks.append((decompressor.decompress(record.compressed_block, max_output_size=record.uncompressed_size), record.labels))
    run = PathRuns(items=len(blocks))
    paths = {
        "transcode_chunk, labels": lambda block, labels: transcode_chunk(block, labels),
        "transcode_chunk, supervoxels": lambda block, labels: transcode_chunk(block, None),
        "reference (decode_block + compressed-segmentation), labels": lambda block, labels: reference_transcode_chunk(block, labels),
    }
    for name, path in paths.items():
        path(*blocks[0])  # load compiled code
        run.passes[name] = []
        with Section() as run.measured[name]:
            for _ in range(passes if name.startswith("transcode") else max(1, passes // 10)):
                started = time.perf_counter()
                for block, labels in blocks:
                    path(block, labels)
                run.passes[name].append(time.perf_counter() - started)
    # untimed: the transcoder's bytes are the reference's, with labels and with supervoxels
    run.identical = True
    for block, labels in blocks:
        for table in (labels, None):
            got = transcode_chunk(block, table)
            run.identical &= got == reference_transcode_chunk(block, table)
        run.chunk_bytes += len(transcode_chunk(block, labels) or b"")
    return run


@dataclass
class EncodeRun(PathRuns):
    checks: list[str] = field(default_factory=list)


def downsampled_chunks() -> dict[tuple[int, int, int], object]:
    """Scale 2 chunks of the real shard: each 2x2x2 group of its decoded blocks, downsampled by mode."""
    import numpy as np

    from connectome_assets.volumes.downres import downsample_mode
    from connectome_assets.volumes.shard_reader import DvidShardReader

    reader = DvidShardReader(SHARD, SHARD_INDEX)
    groups: dict[tuple[int, int, int], list] = {}
    for x, y, z in reader.chunks:
        groups.setdefault((x // 2, y // 2, z // 2), []).append((x % 2, y % 2, z % 2, (x, y, z)))
    chunks = {}
    for parent, children in sorted(groups.items()):
        region = np.zeros((128, 128, 128), np.uint64)
        for x, y, z, chunk in children:
            region[64 * x : 64 * x + 64, 64 * y : 64 * y + 64, 64 * z : 64 * z + 64] = reader.decode(chunk).transpose(2, 1, 0)
        chunks[parent] = downsample_mode(region, threads=1)
    reader.close()
    return chunks


def run_encode(passes: int, core: int, root: str) -> EncodeRun:
    import json
    import os

    import tensorstore as ts

    from connectome_assets.volumes.cseg_transcode import encode_chunk
    from connectome_assets.volumes.precomputed import destination_url, info_from_spec, open_scale, scales_of, shard_files, write_info
    from connectome_assets.volumes.s0 import chunk_id
    from connectome_assets.volumes.shard_writer import ShardWriter
    from connectome_assets.volumes.sharding import shard_chunk_data

    os.sched_setaffinity(0, {core})  # before tensorstore starts its threads: they all share this core
    info = info_from_spec(json.loads(SPEC.read_text()), str(SPEC))
    scale = scales_of(info)[ENCODE_SCALE]
    chunks = downsampled_chunks()
    run = EncodeRun(items=len(chunks))

    def fresh(name: str) -> str:
        dest = destination_url(f"{root}/{name}")
        write_info(dest, info)
        return dest

    def ours(dest: str) -> None:
        with ShardWriter(dest, scale) as shard:
            for chunk, voxels in chunks.items():
                encoded = encode_chunk(voxels)
                if encoded is not None:
                    shard.write(chunk_id(chunk, scale), encoded)
            shard.commit()

    def tensorstores(dest: str) -> None:
        txn = ts.Transaction()
        store = open_scale(dest, ENCODE_SCALE).with_transaction(txn)
        for (x, y, z), voxels in chunks.items():
            store[64 * x : 64 * x + 64, 64 * y : 64 * y + 64, 64 * z : 64 * z + 64, 0].write(voxels).result()
        txn.commit_async().result()

    paths = {
        "encode_chunk alone": lambda dest: [encode_chunk(voxels) for voxels in chunks.values()],
        "encode_chunk + ShardWriter, one transaction + commit": ours,
        "tensorstore neuroglancer_precomputed, one transaction + commit": tensorstores,
    }
    outputs = {}
    for name, path in paths.items():
        path(fresh(f"{len(outputs)}-warm-up"))  # load compiled code
        run.passes[name] = []
        with Section() as run.measured[name]:
            for index in range(passes):
                outputs[name] = fresh(f"{len(outputs)}-{index}")
                started = time.perf_counter()
                path(outputs[name])
                run.passes[name].append(time.perf_counter() - started)
    # untimed: both shards hold the same chunks with the same bytes, and they are encode_chunk's
    written = [outputs[name] for name in list(paths)[1:]]
    names = shard_files(written[0], scale.key)
    if not names or names != shard_files(written[1], scale.key):
        run.checks.append(f"shard files differ: {sorted(names)} vs {sorted(shard_files(written[1], scale.key))} FAIL")
    expected = {chunk_id(chunk, scale): encode_chunk(voxels) for chunk, voxels in chunks.items()}
    expected = {key: value for key, value in expected.items() if value is not None}
    run.chunk_bytes = sum(len(value) for value in expected.values())
    for name in sorted(names):
        ours_data, theirs = (shard_chunk_data(Path(dest[len("file://") :], scale.key, name).read_bytes(), scale.sharding) for dest in written)
        differ = sum(ours_data.get(key) != theirs.get(key) for key in ours_data.keys() | theirs.keys())
        not_encoded = sum(theirs.get(key) != value for key, value in expected.items())
        ok = not differ and not not_encoded and len(theirs) == len(expected)
        run.checks.append(
            f"{name}: {len(ours_data)} chunks (ours) vs {len(theirs)} (tensorstore), {differ} differ; {not_encoded} of tensorstore's differ from encode_chunk"
            + (" (identical)" if ok else " FAIL")
        )
    run.identical = bool(run.checks) and not any("FAIL" in line for line in run.checks)
    return run


def transcode_section(passes: int) -> bool:
    run = in_fresh_process(run_transcode, passes)
    print(f"shard {SHARD.name}: {run.items} blocks after zstd, {run.chunk_bytes / 1e6:.2f} MB of cseg chunks (labels) per pass; one thread\n")
    print(f"{'path':<62} {'passes':>6} {'blocks/s':>10} {'µs/block':>9} {'CPU s':>7}")
    for name, seconds in run.passes.items():
        median = statistics.median(seconds)
        print(f"{name:<62} {len(seconds):>6} {run.items / median:>10,.0f} {median / run.items * 1e6:>9.1f} {run.measured[name].cpu_seconds:>7.2f}")
    print(f"\ncheck: transcoder bytes {'identical to' if run.identical else 'DIFFERENT FROM (FAIL)'} the reference on every block, labels and supervoxels")
    return run.identical


def encode_section(passes: int) -> bool:
    import os
    import tempfile

    core = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="cseg-encode-") as root:
        run = in_fresh_process(run_encode, passes, core, root)
    print(
        f"\nencode: {run.items} chunks of 64³ downsampled (2x2x2 mode) from {SHARD.name}, {run.chunk_bytes / 1e6:.2f} MB of cseg chunks;"
        f" pinned to core {core}; median of {passes} passes\n"
    )
    print(f"{'path':<66} {'chunks/s':>9} {'ms/chunk':>9} {'CPU s':>7}")
    for name, seconds in run.passes.items():
        median = statistics.median(seconds)
        print(f"{name:<66} {run.items / median:>9,.0f} {median / run.items * 1e3:>9.3f} {run.measured[name].cpu_seconds:>7.2f}")
    medians = [statistics.median(seconds) for seconds in run.passes.values()]
    print(f"\nencode_chunk + ShardWriter / tensorstore: {medians[2] / medians[1]:.2f}x; encode_chunk alone / tensorstore: {medians[2] / medians[0]:.2f}x")
    print("checks (the last pass of each writer, chunk for chunk):")
    for line in run.checks:
        print(f"  {line}")
    return run.identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The transcoder, and the encoder from voxels beside tensorstore's, on the real male CNS shard.")
    parser.add_argument("--only", choices=("transcode", "encode"), help="run one section only")
    parser.add_argument("--passes", type=int, default=20, help="passes over the 258 blocks per transcoder path (default 20; the reference runs a tenth)")
    parser.add_argument("--encode-passes", type=int, default=5, help="passes over the downsampled chunks per encode path (default 5)")
    args = parser.parse_args(argv)
    if args.passes < 1 or args.encode_passes < 1:
        parser.error("--passes and --encode-passes must be at least 1")
    ok = True
    if args.only in (None, "transcode"):
        ok &= transcode_section(args.passes)
    if args.only in (None, "encode"):
        ok &= encode_section(args.encode_passes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
