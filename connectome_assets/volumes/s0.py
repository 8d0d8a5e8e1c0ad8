"""Writing one DVID export shard into its neuroglancer output shard (the s0 path; any DVID-exported
scale works the same way).

Per output shard: decode every block, map it to labels (or keep supervoxels), optionally keep every
(N+1)th z slice, transpose z,y,x -> x,y,z, clip to the volume, and write everything through
tensorstore in ONE transaction, committed once: tensorstore then encodes and writes the shard file
once, with no per-chunk read-modify-write of the shard (the exporter's lesson: that cost ~150x write
amplification on GCS). Every write's future is awaited before the commit (the exporter once lost
~31% of s0 by not doing so).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorstore as ts

from connectome_assets.volumes.precomputed import CHUNK, Scale, chunk_box, open_scale
from connectome_assets.volumes.shard_reader import DvidShardReader, ShardFormatError
from connectome_assets.volumes.sharding import compressed_morton_code, grid_bits, shard_and_minishard, shard_file_name

_ORIGIN = re.compile(r"^(\d+)_(\d+)_(\d+)$")


class ShardMappingError(ValueError):
    """A DVID shard whose chunks do not all belong to the output shard its name says."""


def dvid_shard_origin(arrow_path: str | Path) -> tuple[int, int, int]:
    """The voxel origin DVID put in the file name (`<x>_<y>_<z>.arrow`)."""
    match = _ORIGIN.match(Path(arrow_path).stem)
    if not match:
        raise ShardFormatError(f"{arrow_path}: not a DVID export shard name (<x>_<y>_<z>.arrow)")
    return int(match[1]), int(match[2]), int(match[3])


def output_shard_of_chunk(chunk: tuple[int, int, int], scale: Scale) -> int:
    return shard_and_minishard(compressed_morton_code(chunk, grid_bits(scale.grid)), scale.sharding)[0]


def expected_output_shard(arrow_path: str | Path, scale: Scale) -> int:
    """The output shard a DVID shard file must produce, from its name (verify-export's mapping):
    origin voxel -> chunk -> compressed Morton code -> shard. A DVID chunk keeps its grid position
    in the output, also under z_compress N (output chunks are then 64/(N+1) deep, so a decimated
    64-deep block fills exactly one)."""
    x, y, z = dvid_shard_origin(arrow_path)
    return output_shard_of_chunk((x // CHUNK, y // CHUNK, z // CHUNK), scale)


def misplaced_chunk(arrow_path: str | Path, chunk: tuple[int, int, int], scale: Scale, expected: int) -> str:
    """Why a chunk of a DVID shard does not belong in the output shard its file name gives ('' if it does)."""
    shard = output_shard_of_chunk(chunk, scale)
    if shard == expected:
        return ""
    bits = scale.sharding.shard_bits
    return f"{arrow_path}: chunk {chunk} belongs to output shard {shard_file_name(shard, bits)}, but the file name says {shard_file_name(expected, bits)}"


@dataclass
class ShardWriteResult:
    source: str
    output_shard: int
    output_file: str
    chunks: int = 0
    written: int = 0
    all_zero: int = 0  # chunks whose labels all map to 0: nothing to write
    outside: int = 0  # chunks beyond the volume's size (DVID exports them; they are clipped away)
    voxels: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0


def write_dvid_shard(
    reader: DvidShardReader, dest_url: str, scale: Scale, *, supervoxels: bool = False, z_compress: int = 0
) -> ShardWriteResult:
    """Write every chunk of one DVID export shard into the output volume, in one transaction."""
    started = time.perf_counter()
    expected = expected_output_shard(reader.arrow_path, scale)
    result = ShardWriteResult(str(reader.arrow_path), expected, shard_file_name(expected, scale.sharding.shard_bits))
    stride = z_compress + 1
    depth = CHUNK // stride
    store = open_scale(dest_url, scale.index)
    txn = ts.Transaction()
    target = store.with_transaction(txn)
    for chunk in reader.chunks:
        result.chunks += 1
        problem = misplaced_chunk(reader.arrow_path, chunk, scale, expected)
        if problem:
            raise ShardMappingError(f"{problem}; the export is not sharded as the spec says")
        start, end = chunk_box(chunk, scale, depth)
        if (end <= start).any():
            result.outside += 1
            continue
        decoding = time.perf_counter()
        voxels = reader.decode(chunk, supervoxels=supervoxels)  # (z, y, x)
        result.decode_seconds += time.perf_counter() - decoding
        if not voxels.any():
            result.all_zero += 1
            continue
        if stride > 1:
            voxels = voxels[::stride]
        origin = np.asarray(chunk) * [CHUNK, CHUNK, depth]
        xyz = voxels.transpose(2, 1, 0)[tuple(slice(s - o, e - o) for s, e, o in zip(start, end, origin))]
        target[start[0] : end[0], start[1] : end[1], start[2] : end[2], 0].write(xyz).result()
        result.written += 1
        result.voxels += int(xyz.size)
    if result.written:
        txn.commit_async().result()
    result.seconds = time.perf_counter() - started
    return result
