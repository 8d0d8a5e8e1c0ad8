"""The DVID -> compressed_segmentation transcoder alone, on the real male CNS export shard.

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

Usage: python benchmarks/transcode.py [--passes 20]
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


@dataclass
class TranscodeRun:
    blocks: int = 0
    chunk_bytes: int = 0
    passes: dict[str, list[float]] = field(default_factory=dict)
    measured: dict[str, Measurement] = field(default_factory=dict)
    identical: bool = False


def run_transcode(passes: int) -> TranscodeRun:
    import zstandard

    from connectome_assets.volumes.cseg_transcode import reference_transcode_chunk, transcode_chunk
    from connectome_assets.volumes.shard_reader import DvidShardReader

    reader = DvidShardReader(SHARD, SHARD_INDEX)
    decompressor = zstandard.ZstdDecompressor()
    blocks = []
    for coordinate in reader.chunks:
        record = reader.read(coordinate)
        blocks.append((decompressor.decompress(record.compressed_block, max_output_size=record.uncompressed_size), record.labels))
    run = TranscodeRun(blocks=len(blocks))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transcode throughput on the real male CNS shard.")
    parser.add_argument("--passes", type=int, default=20, help="passes over the 258 blocks per transcoder path (default 20; the reference runs a tenth)")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    run = in_fresh_process(run_transcode, args.passes)
    print(f"shard {SHARD.name}: {run.blocks} blocks after zstd, {run.chunk_bytes / 1e6:.2f} MB of cseg chunks (labels) per pass; one thread\n")
    print(f"{'path':<62} {'passes':>6} {'blocks/s':>10} {'µs/block':>9} {'CPU s':>7}")
    for name, seconds in run.passes.items():
        median = statistics.median(seconds)
        print(f"{name:<62} {len(seconds):>6} {run.blocks / median:>10,.0f} {median / run.blocks * 1e6:>9.1f} {run.measured[name].cpu_seconds:>7.2f}")
    print(f"\ncheck: transcoder bytes {'identical to' if run.identical else 'DIFFERENT FROM (FAIL)'} the reference on every block, labels and supervoxels")
    return 0 if run.identical else 1


if __name__ == "__main__":
    sys.exit(main())
