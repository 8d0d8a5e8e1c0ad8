"""Writing one output shard of scale k from scale k−1 by 2×2×2 mode (`downres.downsample_region`).

Reads only what it needs: the parent shard files the plan names give, from their indices, the
parent chunks below this output shard; for each output chunk that has data below it, the parent
region of 128³ voxels (clipped to the parent's size) is read through tensorstore, downsampled,
encoded to compressed_segmentation by our compiled encoder (`cseg_transcode.encode_chunk`: the
bytes tensorstore would store, ~3-4x faster than its encode at commit; benchmarks/transcode.py) and
put into the shard through the `neuroglancer_uint64_sharded` kvstore (`shard_writer.ShardWriter`):
ONE transaction per output shard, committed once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from connectome_assets.volumes.cseg_transcode import encode_chunk
from connectome_assets.volumes.downres import Box, downsample_region
from connectome_assets.volumes.plan import ShardJob, child_shards, shard_chunks
from connectome_assets.volumes.precomputed import Scale, chunk_box, open_scale
from connectome_assets.volumes.s0 import chunk_id
from connectome_assets.volumes.shard_writer import ShardWriter


@dataclass
class DownresResult:
    output_file: str
    chunks: int = 0
    written: int = 0
    all_zero: int = 0
    input_voxels: int = 0
    seconds: float = 0.0


def child_chunks_of(dest_url: str, parent: Scale, target: Scale, job: ShardJob) -> np.ndarray:
    """The chunks of `job`'s output shard that have parent data, from the parent shard indices."""
    found = []
    for name in job.parent_shards:
        chunks = shard_chunks(dest_url, parent, name)
        found.append(chunks[child_shards(chunks, target) == job.output_shard] // 2)
    return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 3), np.int64)


def write_downres_shard(dest_url: str, parent: Scale, target: Scale, job: ShardJob, rule: str = "tensorstore") -> DownresResult:
    """Write `job`'s output shard of scale `target` from scale `parent` (2×2×2 mode, `rule`)."""
    started = time.perf_counter()
    result = DownresResult(job.output_file)
    source = open_scale(dest_url, parent.index)
    # Absolute coordinates: the parent's extent is bounded by its offset + size.
    parent_extent = np.array(parent.voxel_offset) + parent.size

    def read(box: Box) -> np.ndarray:
        (x0, x1), (y0, y1), (z0, z1) = box
        below = source[x0:x1, y0:y1, z0:z1, 0].read().result()
        result.input_voxels += int(below.size)
        return below

    with ShardWriter(dest_url, target) as shard:
        for chunk in child_chunks_of(dest_url, parent, target, job).tolist():
            result.chunks += 1
            start, end = chunk_box(chunk, target)
            if (end <= start).any():
                continue
            encoded = encode_chunk(downsample_region(read, tuple(zip(start.tolist(), end.tolist())), parent_extent.tolist(), rule))
            if encoded is None:  # all 0: nothing to store
                result.all_zero += 1
                continue
            shard.write(chunk_id(tuple(chunk), target), encoded)
            result.written += 1
        shard.commit()
    result.seconds = time.perf_counter() - started
    return result
