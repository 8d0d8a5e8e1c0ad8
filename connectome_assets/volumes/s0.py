"""Writing one DVID export shard into its neuroglancer output shard (the s0 path; any DVID-exported
scale works the same way), by one of two writers:

- `transcode` (the default): each block, after zstd and with its table mapped to labels (or kept:
  supervoxels), goes straight to the compressed_segmentation bytes of its chunk
  (`cseg_transcode.transcode_chunk`, clipped to the volume), and those go into the shard through
  the `neuroglancer_uint64_sharded` kvstore (`shard_writer.ShardWriter`). No uint64 voxels are
  held, and tensorstore does no encoding.
- `array` (the fallback, and always with `z_compress`, which needs voxels): decode every block,
  map it, optionally keep every (N+1)th z slice, transpose z,y,x -> x,y,z, clip to the volume and
  write the arrays through tensorstore's `neuroglancer_precomputed` driver, which encodes at commit.

Both write ONE transaction per output shard, committed once: the shard file is written once, with no
per-chunk read-modify-write of the shard (the exporter's lesson: that cost ~150x write amplification
on GCS). Every write's future is awaited before the commit (the exporter once lost ~31% of s0 by
not doing so). Both produce the same chunks, byte for byte (tested), and count them the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorstore as ts

from connectome_assets.volumes import WRITERS
from connectome_assets.volumes.block_codec import BlockFormatError, decode_block
from connectome_assets.volumes.cseg_transcode import transcode_chunk
from connectome_assets.volumes.precomputed import CHUNK, Scale, chunk_box, open_scale
from connectome_assets.volumes.shard_reader import DvidShardReader, ShardFormatError
from connectome_assets.volumes.shard_writer import ShardWriter
from connectome_assets.volumes.sharding import compressed_morton_code, compressed_morton_codes, grid_bits, shard_and_minishard, shard_file_name, shards_of_codes

_ORIGIN = re.compile(r"^(\d+)_(\d+)_(\d+)$")


class ShardMappingError(ValueError):
    """A DVID shard whose chunks do not all belong to the output shard its name says."""


def dvid_writer(writer: str, z_compress: int = 0) -> str:
    """The writer that runs for a DVID scale: `writer`, except that `z_compress` (which keeps every
    (N+1)th z slice of the voxels) always takes the array path."""
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}: one of {', '.join(WRITERS)}")
    return "array" if z_compress else writer


def dvid_shard_origin(arrow_path: str | Path) -> tuple[int, int, int]:
    """The voxel origin DVID put in the file name (`<x>_<y>_<z>.arrow`)."""
    match = _ORIGIN.match(Path(arrow_path).stem)
    if not match:
        raise ShardFormatError(f"{arrow_path}: not a DVID export shard name (<x>_<y>_<z>.arrow)")
    return int(match[1]), int(match[2]), int(match[3])


def chunk_id(chunk: tuple[int, int, int], scale: Scale) -> int:
    """A chunk's id in the sharded scale: the compressed Morton code of its grid position."""
    return compressed_morton_code(chunk, grid_bits(scale.grid))


def output_shard_of_chunk(chunk: tuple[int, int, int], scale: Scale) -> int:
    return shard_and_minishard(chunk_id(chunk, scale), scale.sharding)[0]


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
    writer: str = "transcode"  # the writer that ran (z_compress always takes the array path)
    chunks: int = 0
    written: int = 0
    all_zero: int = 0  # chunks whose labels all map to 0 inside the volume: nothing to write
    outside: int = 0  # chunks beyond the volume's size (DVID exports them; they are clipped away)
    voxels: int = 0
    seconds: float = 0.0
    # Where the time went:
    read_seconds: float = 0.0  # the Arrow row and zstd
    decode_seconds: float = 0.0  # array: the DVID block to uint64 voxels (label mapping included)
    transcode_seconds: float = 0.0  # transcode: the DVID block to compressed_segmentation bytes
    write_seconds: float = 0.0  # tensorstore writes and the commit (array: the compressed_segmentation encode too)


def write_dvid_shard(
    reader: DvidShardReader, dest_url: str, scale: Scale, *, supervoxels: bool = False, z_compress: int = 0, writer: str = "transcode"
) -> ShardWriteResult:
    """Write every chunk of one DVID export shard into the output volume, in one transaction, with
    `writer` ("transcode" or "array"; see the module's docstring)."""
    started = time.perf_counter()
    writer = dvid_writer(writer, z_compress)
    expected = expected_output_shard(reader.arrow_path, scale)
    result = ShardWriteResult(str(reader.arrow_path), expected, shard_file_name(expected, scale.sharding.shard_bits), writer)
    if writer == "transcode":
        _write_transcoded(reader, dest_url, scale, expected, supervoxels, result)
    else:
        _write_voxels(reader, dest_url, scale, expected, supervoxels, z_compress, result)
    result.seconds = time.perf_counter() - started
    return result


_Block = tuple[tuple[int, int, int], int, np.ndarray, np.ndarray, bytes, np.ndarray | None]


def _blocks_inside(reader: DvidShardReader, scale: Scale, expected: int, depth: int, supervoxels: bool, result: ShardWriteResult) -> Iterator[_Block]:
    """Each chunk of the DVID shard inside the volume: (chunk, its chunk id, its voxel box [start, end)
    clipped to the volume, its DVID block bytes after zstd, the table to map them through or None).
    Counts `chunks` and `outside` and times the reading; refuses a chunk that belongs to another
    output shard."""
    chunks = list(reader.chunks)
    # Chunk ids and shards of the whole file at once (per chunk in Python they cost ~15% of a shard).
    ids = compressed_morton_codes(np.array(chunks, dtype=np.int64).reshape(-1, 3), grid_bits(scale.grid))
    shards = shards_of_codes(ids, scale.sharding)
    for chunk, chunk_id_, shard in zip(chunks, ids.tolist(), shards.tolist()):
        result.chunks += 1
        if shard != expected:
            raise ShardMappingError(f"{misplaced_chunk(reader.arrow_path, chunk, scale, expected)}; the export is not sharded as the spec says")
        start, end = chunk_box(chunk, scale, depth)
        if (end <= start).any():
            result.outside += 1
            continue
        reading = time.perf_counter()
        block, table, _ = reader.block(chunk, supervoxels)
        result.read_seconds += time.perf_counter() - reading
        yield chunk, chunk_id_, start, end, block, table


def _write_transcoded(reader: DvidShardReader, dest_url: str, scale: Scale, expected: int, supervoxels: bool, result: ShardWriteResult) -> None:
    """Blocks -> compressed_segmentation chunk bytes -> the sharded kvstore, one transaction."""
    with ShardWriter(dest_url, scale) as shard:
        for chunk, chunk_id_, start, end, block, table in _blocks_inside(reader, scale, expected, CHUNK, supervoxels, result):
            extent = tuple((end - start).tolist())
            transcoding = time.perf_counter()
            try:
                encoded = transcode_chunk(block, table, extent)
            except BlockFormatError as exc:
                raise reader.bad_block(chunk, exc) from None
            writing = time.perf_counter()
            result.transcode_seconds += writing - transcoding
            if encoded is None:
                result.all_zero += 1
                continue
            shard.write(chunk_id_, encoded)
            result.write_seconds += time.perf_counter() - writing
            result.written += 1
            result.voxels += extent[0] * extent[1] * extent[2]
        committing = time.perf_counter()
        shard.commit()
        result.write_seconds += time.perf_counter() - committing


def _write_voxels(
    reader: DvidShardReader, dest_url: str, scale: Scale, expected: int, supervoxels: bool, z_compress: int, result: ShardWriteResult
) -> None:
    """Blocks -> uint64 voxels -> tensorstore's neuroglancer_precomputed driver, one transaction."""
    stride = z_compress + 1
    depth = CHUNK // stride
    txn = ts.Transaction()
    target = open_scale(dest_url, scale.index).with_transaction(txn)
    for chunk, _, start, end, block, table in _blocks_inside(reader, scale, expected, depth, supervoxels, result):
        decoding = time.perf_counter()
        try:
            voxels = decode_block(block, table)  # (z, y, x)
        except BlockFormatError as exc:
            raise reader.bad_block(chunk, exc) from None
        if stride > 1:
            voxels = voxels[::stride]
        origin = np.asarray(chunk) * [CHUNK, CHUNK, depth]
        xyz = voxels.transpose(2, 1, 0)[tuple(slice(s - o, e - o) for s, e, o in zip(start, end, origin))]
        writing = time.perf_counter()
        result.decode_seconds += writing - decoding
        if not xyz.any():  # tensorstore would store nothing for it either
            result.all_zero += 1
            continue
        target[start[0] : end[0], start[1] : end[1], start[2] : end[2], 0].write(xyz).result()
        result.write_seconds += time.perf_counter() - writing
        result.written += 1
        result.voxels += int(xyz.size)
    if result.written:
        committing = time.perf_counter()
        txn.commit_async().result()
        result.write_seconds += time.perf_counter() - committing
