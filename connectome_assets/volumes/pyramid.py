"""Writing one output shard of scale k from scale k−1 by 2×2×2 mode.

Reads only what it needs: the indices of the parent shard files the plan names give the parent
chunks below this output shard and where their bytes lie. They are read in batches of about
`plan.PARENT_READ_BYTES`, adjacent chunks of a file as one ranged read (the 8 chunks below an
output chunk are neighbours in a shard), and never decoded to uint64: `cseg_downsample` takes the
mode of each parent chunk straight from its compressed_segmentation bytes into the output chunk,
which our compiled encoder (`cseg_transcode.encode_chunk`: the bytes tensorstore would store)
encodes; chunks go into the shard through the `neuroglancer_uint64_sharded` kvstore
(`shard_writer.ShardWriter`): ONE transaction per output shard, committed once.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorstore as ts

from connectome_assets.volumes.cseg_downsample import CsegChunkError, downsample_chunk_into
from connectome_assets.volumes.cseg_transcode import encode_chunk
from connectome_assets.volumes.plan import PARENT_READ_BYTES, ShardJob, chunk_shards, chunks_above, shard_index
from connectome_assets.volumes.precomputed import Scale, chunk_box, kvstore_spec
from connectome_assets.volumes.s0 import chunk_id
from connectome_assets.volumes.shard_writer import ShardWriter
from connectome_assets.volumes.sharding import ShardFileError, chunk_data, grid_bits, morton_decode

Chunk = tuple[int, int, int]


@dataclass
class DownresResult:
    output_file: str
    chunks: int = 0
    written: int = 0
    all_zero: int = 0
    input_voxels: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ParentChunk:
    file: str  # the parent scale's shard file holding it
    chunk: Chunk
    offset: int  # its stored bytes in that file
    size: int


def parent_chunks_of(dest_url: str, parent: Scale, target: Scale, job: ShardJob) -> dict[Chunk, list[ParentChunk]]:
    """The chunks of `job`'s output shard that have parent data, each with the parent chunks below it
    (from the parent shard indices), in chunk order."""
    below: dict[Chunk, list[ParentChunk]] = {}
    for name in job.parent_shards:
        index = shard_index(dest_url, parent, name)
        coords = morton_decode(np.fromiter(index, dtype=np.uint64, count=len(index)), grid_bits(parent.grid))
        above = chunks_above(coords, parent, target)
        mine = chunk_shards(above, target) == job.output_shard
        for (offset, size), chunk, output in zip(np.array(list(index.values()))[mine].tolist(), coords[mine].tolist(), above[mine].tolist()):
            below.setdefault(tuple(output), []).append(ParentChunk(name, tuple(chunk), offset, size))
    return dict(sorted(below.items()))


def child_chunks_of(dest_url: str, parent: Scale, target: Scale, job: ShardJob) -> np.ndarray:
    """The chunks (x, y, z) of `job`'s output shard that have parent data."""
    return np.array(list(parent_chunks_of(dest_url, parent, target, job)), dtype=np.int64).reshape(-1, 3)


def _batches(below: dict[Chunk, list[ParentChunk]]) -> Iterator[list[tuple[Chunk, list[ParentChunk]]]]:
    """Output chunks in groups whose parent chunks add up to about PARENT_READ_BYTES."""
    batch: list[tuple[Chunk, list[ParentChunk]]] = []
    size = 0
    for chunk, parents in below.items():
        batch.append((chunk, parents))
        size += sum(p.size for p in parents)
        if size >= PARENT_READ_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_parent_chunks(store: ts.KvStore, where: str, parent: Scale, chunks: list[ParentChunk]) -> dict[Chunk, bytes | memoryview]:
    """Each parent chunk's compressed_segmentation bytes (the data encoding removed). Chunks stored
    back to back in a file are fetched by one ranged read; all reads are in flight at once."""
    runs: list[list[ParentChunk]] = []  # chunks stored back to back in one file
    for p in sorted(chunks, key=lambda p: (p.file, p.offset)):
        last = runs[-1][-1] if runs else None
        if last is not None and last.file == p.file and last.offset + last.size == p.offset:
            runs[-1].append(p)
        else:
            runs.append([p])
    pending = [(run, store.read(f"{parent.key}/{run[0].file}", byte_range=slice(run[0].offset, run[-1].offset + run[-1].size))) for run in runs]
    found: dict[Chunk, bytes] = {}
    for members, future in pending:
        file, start, end = members[0].file, members[0].offset, members[-1].offset + members[-1].size
        try:
            read = future.result()
        except ValueError as exc:  # e.g. OUT_OF_RANGE: the file changed after its index was read
            named = f"{len(members)} chunk{'s' if len(members) > 1 else ''} from {members[0].chunk}"
            raise ShardFileError(f"{where}{parent.key}/{file}: bytes {start}..{end} ({named}) cannot be read ({exc})") from None
        if read.state != "value":
            raise ShardFileError(f"{where}{parent.key}/{file}: the parent shard file is gone")
        value = memoryview(read.value)  # `.value` makes a new bytes object at every access
        for p in members:
            try:
                found[p.chunk] = chunk_data(value[p.offset - start : p.offset - start + p.size], parent.sharding)
            except (OSError, EOFError, zlib.error) as exc:  # gzip data that does not decompress
                raise CsegChunkError(f"{where}{parent.key}/{file}: chunk {p.chunk} is not valid gzip data ({exc})") from None
    return found


def write_downres_shard(dest_url: str, parent: Scale, target: Scale, job: ShardJob, rule: str = "tensorstore") -> DownresResult:
    """Write `job`'s output shard of scale `target` from scale `parent` (2×2×2 mode, `rule`)."""
    started = time.perf_counter()
    result = DownresResult(job.output_file)
    store = ts.KvStore.open(kvstore_spec(dest_url)).result()
    with ShardWriter(dest_url, target) as shard:
        for batch in _batches(parent_chunks_of(dest_url, parent, target, job)):
            stored = read_parent_chunks(store, dest_url, parent, [p for _, parents in batch for p in parents])
            for chunk, parents in batch:
                result.chunks += 1
                start, end = chunk_box(chunk, target)
                if (end <= start).any():
                    continue
                out = np.zeros(tuple((end - start).tolist()), dtype=np.uint64)  # a parent chunk not stored is all 0
                for p in parents:
                    p_start, p_end = chunk_box(p.chunk, parent)
                    try:
                        downsample_chunk_into(out, stored[p.chunk], (p_end - p_start).tolist(), (p_start // 2 - start).tolist(), rule)
                    except CsegChunkError as exc:
                        raise CsegChunkError(f"{dest_url}{parent.key}/{p.file}: chunk {p.chunk}: {exc}") from None
                    result.input_voxels += int(np.prod(p_end - p_start))
                encoded = encode_chunk(out)
                if encoded is None:  # all 0: nothing to store
                    result.all_zero += 1
                    continue
                shard.write(chunk_id(chunk, target), encoded)
                result.written += 1
        shard.commit()
    result.seconds = time.perf_counter() - started
    return result
