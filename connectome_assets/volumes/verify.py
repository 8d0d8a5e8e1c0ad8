"""Checking a scale before the next one builds on it (tensorstore-export's verify-export and
validate-dvid, plus a voxel comparison).

- `validate_dvid`: every chunk of every DVID shard of a scale belongs to the output shard the file
  name says (and how many chunks lie outside the volume).
- `verify_scale`: every planned output shard exists, holds chunks, and a sample of its chunks reads
  back equal to the decoded DVID source (s0 path) or to an independent reference mode of the parent
  (downres path: plain numpy, not the compiled kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from connectome_assets.volumes.plan import Manifest, ShardJob, shard_chunks
from connectome_assets.volumes.downres import source_box
from connectome_assets.volumes.precomputed import CHUNK, Scale, chunk_box, open_scale, read_info, scales_of, shard_files
from connectome_assets.volumes.pyramid import child_chunks_of
from connectome_assets.volumes.s0 import expected_output_shard, misplaced_chunk
from connectome_assets.volumes.shard_reader import DvidShardReader
from connectome_assets.volumes.sharding import shard_file_name


@dataclass
class DvidValidation:
    shards: int = 0
    chunks: int = 0
    outside: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_dvid(export_dir: str | Path, scale: Scale) -> DvidValidation:
    """Every chunk of each `<export_dir>/s<k>/*.arrow` maps to the output shard its name gives."""
    report = DvidValidation()
    owners: dict[int, str] = {}
    for arrow in sorted((Path(export_dir) / f"s{scale.index}").glob("*.arrow")):
        reader = DvidShardReader(arrow)
        try:
            expected = expected_output_shard(arrow, scale)
            report.shards += 1
            if expected in owners:
                report.problems.append(f"{arrow.name} and {owners[expected]} both map to {shard_file_name(expected, scale.sharding.shard_bits)}")
            owners[expected] = arrow.name
            for chunk in reader.chunks:
                report.chunks += 1
                start, end = chunk_box(chunk, scale)
                if (end <= start).any():
                    report.outside += 1
                    continue
                problem = misplaced_chunk(arrow.name, chunk, scale, expected)
                if problem:
                    report.problems.append(problem)
                    break
        finally:
            reader.close()
    return report


def reference_mode(region: np.ndarray, rule: str) -> np.ndarray:
    """2×2×2 mode in plain numpy, independent of the compiled kernel: pad odd edges with a marker,
    sort each block's 8 values, count runs, and take the most frequent (ties: the smallest value;
    under `dvid` zeros do not vote unless the block is all zero)."""
    shape = [(-(-n // 2)) * 2 for n in region.shape]
    padded = np.zeros(shape, dtype=np.uint64)
    valid = np.zeros(shape, dtype=bool)
    padded[: region.shape[0], : region.shape[1], : region.shape[2]] = region
    valid[: region.shape[0], : region.shape[1], : region.shape[2]] = True
    out_shape = [n // 2 for n in shape]

    def blocks(a: np.ndarray) -> np.ndarray:
        return a.reshape(out_shape[0], 2, out_shape[1], 2, out_shape[2], 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8)

    values, present = blocks(padded), blocks(valid)
    counts = np.zeros(values.shape, dtype=np.int64)
    for i in range(8):
        counts[:, i] = ((values == values[:, i : i + 1]) & present).sum(axis=1)
    counts[~present] = -1
    if rule == "dvid":
        voters = (values != 0) & present
        counts[~voters & voters.any(axis=1, keepdims=True)] = -1
    best = counts.max(axis=1, keepdims=True)
    candidates = np.where(counts == best, values, np.uint64(np.iinfo(np.uint64).max))
    return candidates.min(axis=1).reshape(out_shape)


@dataclass
class ScaleVerification:
    scale: int
    expected_shards: int = 0
    present_shards: int = 0
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_scale(manifest: Manifest, sample_per_shard: int = 3, seed: int = 0) -> ScaleVerification:
    """Every shard the manifest planned is in the destination, and sampled chunks are right."""
    scales = scales_of(read_info(manifest.dest_url))
    target = scales[manifest.scale]
    report = ScaleVerification(manifest.scale, expected_shards=len(manifest.shards))
    present = shard_files(manifest.dest_url, target.key)
    store = open_scale(manifest.dest_url, target.index)
    rng = np.random.default_rng(seed)
    for job in manifest.shards:
        if job.output_file not in present:
            source = f" (from {job.source})" if job.source else ""
            report.problems.append(f"{target.key}/{job.output_file} is missing{source}")
            continue
        report.present_shards += 1
        if manifest.kind == "dvid":
            report.problems += _check_dvid_sample(manifest, target, store, job, rng, sample_per_shard, report)
        else:
            report.problems += _check_downres_sample(manifest, scales[manifest.scale - 1], target, store, job, rng, sample_per_shard, report)
    return report


def _check_dvid_sample(manifest: Manifest, target: Scale, store, job: ShardJob, rng, count: int, report: ScaleVerification) -> list[str]:
    reader = DvidShardReader(job.source)
    try:
        stride = manifest.z_compress + 1
        boxes = {c: chunk_box(c, target, CHUNK // stride) for c in reader.chunks}
        inside = [c for c, (start, end) in boxes.items() if (end > start).all()]
        picked = [inside[i] for i in rng.choice(len(inside), min(count, len(inside)), replace=False)] if inside else []
        for chunk in picked:
            start, end = boxes[chunk]
            expected = reader.decode(chunk, supervoxels=manifest.supervoxels)[::stride].transpose(2, 1, 0)
            expected = expected[: end[0] - start[0], : end[1] - start[1], : end[2] - start[2]]
            got = store[start[0] : end[0], start[1] : end[1], start[2] : end[2], 0].read().result()
            report.chunks_checked += 1
            if not np.array_equal(got, expected):
                return [f"{target.key}/{job.output_file}: chunk {chunk} reads back {int((got != expected).sum())} voxels different from {job.source}"]
    finally:
        reader.close()
    return []


def _check_downres_sample(manifest: Manifest, parent: Scale, target: Scale, store, job: ShardJob, rng, count: int, report: ScaleVerification) -> list[str]:
    chunks = child_chunks_of(manifest.dest_url, parent, target, job)
    written = set(map(tuple, shard_chunks(manifest.dest_url, target, job.output_file).tolist()))
    source = open_scale(manifest.dest_url, parent.index)
    for i in rng.choice(len(chunks), min(count, len(chunks)), replace=False) if len(chunks) else []:
        start, end = chunk_box(chunks[i], target)
        (x0, x1), (y0, y1), (z0, z1) = source_box(tuple(zip(start.tolist(), end.tolist())), (np.array(parent.voxel_offset) + parent.size).tolist())
        below = source[x0:x1, y0:y1, z0:z1, 0].read().result()
        expected = reference_mode(below, manifest.rule)[: end[0] - start[0], : end[1] - start[1], : end[2] - start[2]]
        got = store[start[0] : end[0], start[1] : end[1], start[2] : end[2], 0].read().result()
        report.chunks_checked += 1
        if expected.any() and tuple(chunks[i].tolist()) not in written:
            return [f"{target.key}/{job.output_file}: chunk {tuple(chunks[i].tolist())} has data below it but was not written"]
        if not np.array_equal(got, expected):
            return [f"{target.key}/{job.output_file}: chunk {tuple(chunks[i].tolist())} differs from the reference mode in {int((got != expected).sum())} voxels"]
    return []
