"""Planning a scale before running it (igneous' rule: plan tasks separately from running them).

A manifest lists, for one scale of one volume, every output shard to produce — from a DVID export
shard (`dvid`) or by 2×2×2 mode from the scale below (`downres`) — with a memory estimate per shard,
and groups shards into tasks by memory tier. One worker process runs one task
(`python -m connectome_assets.volumes.worker --manifest M --task-index I`); locally a bounded
process pool runs them, on Kubernetes an Indexed Job (one pod per task, memory from its tier).

Memory of one output shard:
    overhead 1 GiB + source bytes + [chunks × 2 MiB (uint64 64³)] + 2 × encoded shard
where the encoded shard is chunks × the mean compressed_segmentation bytes per chunk of the scale
(the exporter's measured BYTES_PER_CHUNK for the male CNS), and the source bytes are the Arrow
file (s0), or for a downres one batch of parent chunks and the output chunk it builds
(`downres_source_bytes`). The bracketed term is for the writer that holds every chunk of the shard
as uint64 in its transaction until the single commit, where tensorstore encodes them (the array
writer); the transcode writer and downres (which encodes each chunk itself,
`cseg_transcode.encode_chunk`) hold only the encoded chunks.
"""

from __future__ import annotations

import json
import math
import posixpath
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from connectome_assets.connectome.files import filesystem_for
from connectome_assets.settings import MEMORY_TIERS_GIB
from connectome_assets.volumes.precomputed import CHUNK, Scale, kvstore_spec, read_info, scales_of, shard_files
from connectome_assets.volumes.s0 import dvid_writer, expected_output_shard
from connectome_assets.volumes.sharding import (
    ShardFileError,
    compressed_morton_codes,
    grid_bits,
    morton_decode,
    shard_chunk_ids,
    shard_file_name,
    shards_of_codes,
)

GIB = 1 << 30
TIERS_GIB = MEMORY_TIERS_GIB
OVERHEAD_BYTES = 1 * GIB
CHUNK_ARRAY_BYTES = CHUNK**3 * 8
# A downres reads the parent chunks below its output chunks in batches of about this many stored bytes.
PARENT_READ_BYTES = 64 << 20
# gzip'd chunk data is also held gunzipped; compressed_segmentation bytes gzip about 2-4x.
GZIP_EXPANSION = 4
# Mean encoded bytes per chunk at s0..s9 (tensorstore-export's figures for the male CNS).
ENCODED_BYTES_PER_CHUNK = (13_932, 27_919, 44_482, 78_376, 130_244, 199_396, 258_999, 170_713, 159_269, 129_385)


class PlanError(ValueError):
    """A scale that cannot be planned; the message says what is missing."""


@dataclass(frozen=True)
class ShardJob:
    output_file: str  # e.g. "0fe9.shard"
    output_shard: int
    chunks: int
    memory_bytes: int
    source: str = ""  # dvid: the .arrow path
    parent_shards: list[str] = field(default_factory=list)  # downres: the parent scale's shard files it reads


@dataclass(frozen=True)
class Task:
    tier_gib: int
    shards: list[ShardJob]

    @property
    def memory_bytes(self) -> int:
        return max((s.memory_bytes for s in self.shards), default=0)


@dataclass(frozen=True)
class Manifest:
    kind: str  # "dvid" or "downres"
    dest_url: str
    scale: int
    scale_key: str
    tasks: list[Task]
    supervoxels: bool = False
    z_compress: int = 0
    rule: str = "tensorstore"
    export_dir: str = ""
    writer: str = "transcode"  # dvid: the writer that runs ("transcode" or "array", see s0.py); unused by downres

    @property
    def shards(self) -> list[ShardJob]:
        return [job for task in self.tasks for job in task.shards]

    def save(self, url: str | Path) -> str:
        """Write the manifest to a local path, `file://…` or `gs://…` (where worker pods can read it); returns where."""
        fs, path = filesystem_for(str(url))
        try:
            fs.create_dir(posixpath.dirname(path), recursive=True)
            with fs.open_output_stream(path) as out:
                out.write(json.dumps(asdict(self), indent=1).encode())
        except OSError as exc:
            raise PlanError(f"{url}: cannot write the manifest ({exc})") from None
        return str(url)

    @classmethod
    def load(cls, url: str | Path) -> Manifest:
        try:
            fs, path = filesystem_for(str(url))
            with fs.open_input_stream(path) as stream:
                raw = json.loads(stream.read())
            tasks = [Task(t["tier_gib"], [ShardJob(**s) for s in t["shards"]]) for t in raw.pop("tasks")]
            return cls(tasks=tasks, **raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"{url}: cannot read the manifest ({exc})") from None


def downres_source_bytes(parent: Scale) -> int:
    """What a downres holds at a time: one batch of parent chunks as stored (and gunzipped, for gzip
    data) and the output chunk it builds."""
    held = PARENT_READ_BYTES * (1 + GZIP_EXPANSION if parent.sharding.data_encoding == "gzip" else 1)
    return held + CHUNK_ARRAY_BYTES


def tier_for(memory_bytes: int, tiers_gib: Sequence[int] = TIERS_GIB) -> int:
    """The smallest memory tier that fits; a shard beyond the largest is an error worth reading."""
    for tier in tiers_gib:
        if memory_bytes <= tier * GIB:
            return tier
    raise PlanError(f"an output shard needs {memory_bytes / GIB:.1f} GiB, more than the largest tier ({tiers_gib[-1]} GiB)")


def shard_memory(chunks: int, source_bytes: int, scale: int, *, holds_voxels: bool = True) -> int:
    """The memory estimate of one output shard (the module's docstring); `holds_voxels`: the writer keeps
    every chunk as uint64 until the commit."""
    encoded = chunks * ENCODED_BYTES_PER_CHUNK[min(scale, len(ENCODED_BYTES_PER_CHUNK) - 1)]
    return OVERHEAD_BYTES + source_bytes + (chunks * CHUNK_ARRAY_BYTES if holds_voxels else 0) + 2 * encoded


def group_into_tasks(jobs: list[ShardJob], shards_per_task: int, tiers_gib: Sequence[int] = TIERS_GIB) -> list[Task]:
    """Tasks of at most `shards_per_task` shards of one tier each, largest shards first, each onto
    the task with the least memory-bytes so far (greedy LPT, as the exporter balances)."""
    tasks: list[Task] = []
    by_tier: dict[int, list[ShardJob]] = {}
    for job in jobs:
        by_tier.setdefault(tier_for(job.memory_bytes, tiers_gib), []).append(job)
    for tier, members in sorted(by_tier.items()):
        count = math.ceil(len(members) / shards_per_task)
        bins: list[list[ShardJob]] = [[] for _ in range(count)]
        loads = [0] * count
        for job in sorted(members, key=lambda j: (-j.memory_bytes, j.output_file)):
            target = min((i for i in range(count) if len(bins[i]) < shards_per_task), key=lambda i: loads[i])
            bins[target].append(job)
            loads[target] += job.memory_bytes
        tasks += [Task(tier, members) for members in bins]
    return tasks


def _count_csv_chunks(csv_path: Path) -> int:
    with csv_path.open() as lines:
        return sum(1 for line in lines if line.strip() and line[0].isdigit())


def plan_dvid_scale(
    export_dir: str | Path,
    dest_url: str,
    scale: int,
    *,
    supervoxels: bool = False,
    z_compress: int = 0,
    writer: str = "transcode",
    only_missing: bool = False,
    shards_per_task: int = 4,
) -> Manifest:
    """One job per DVID shard file under `<export_dir>/s<scale>/`; with `only_missing`, only those
    whose output shard is not yet in the destination. The manifest names the writer that runs
    (`writer`, or array under `z_compress`)."""
    writer = dvid_writer(writer, z_compress)
    info = read_info(dest_url)
    target = scales_of(info)[scale]
    directory = Path(export_dir) / f"s{scale}"
    arrows = sorted(directory.glob("*.arrow"))
    if not arrows:
        raise PlanError(f"{directory}: no DVID export shards (*.arrow) for scale {scale}")
    existing = shard_files(dest_url, target.key) if only_missing else set()
    jobs = []
    sources: dict[str, Path] = {}
    for arrow in arrows:
        shard = expected_output_shard(arrow, target)
        name = shard_file_name(shard, target.sharding.shard_bits)
        if name in sources:
            # Two transactions on one shard would race; DVID's names then disagree with the spec.
            raise PlanError(f"{arrow} and {sources[name]} both map to output shard {target.key}/{name}: the spec's sharding does not match the export's shard files")
        sources[name] = arrow
        if name in existing:
            continue
        csv = arrow.with_suffix(".csv")
        if not csv.is_file():
            raise PlanError(f"{arrow}: its chunk index {csv.name} is missing")
        chunks = _count_csv_chunks(csv)
        memory = shard_memory(chunks, arrow.stat().st_size, scale, holds_voxels=writer == "array")
        jobs.append(ShardJob(name, shard, chunks, memory, source=str(arrow)))
    return Manifest(
        "dvid", dest_url, scale, target.key, group_into_tasks(jobs, shards_per_task), supervoxels, z_compress, export_dir=str(export_dir), writer=writer
    )


def shard_index(dest_url: str, scale: Scale, name: str) -> dict[int, tuple[int, int]]:
    """One shard file of a scale: chunk id -> (byte offset, size) of its stored data, from its
    indices only (ranged reads)."""
    store = ts.KvStore.open(kvstore_spec(dest_url)).result()
    key = f"{scale.key}/{name}"

    def read(start: int, end: int) -> bytes:
        return bytes(store.read(key, byte_range=slice(start, end)).result().value)

    try:
        return shard_chunk_ids(read, scale.sharding)
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # cut short, or a minishard index that is not gzip
        raise ShardFileError(f"{dest_url}{key}: the shard's index cannot be read ({exc})") from None


def shard_chunks(dest_url: str, scale: Scale, name: str) -> np.ndarray:
    """The chunks (x, y, z) one shard file of a scale holds, from its indices only."""
    ids = np.fromiter(shard_index(dest_url, scale, name), dtype=np.uint64)
    return morton_decode(ids, grid_bits(scale.grid))


def chunks_above(chunks: np.ndarray, parent: Scale, child: Scale) -> np.ndarray:
    """The chunk of scale k+1 each chunk of scale k downsamples into (chunk sizes may differ: a
    z-compressed s0 has shallower chunks than s1)."""
    return np.asarray(chunks) * np.array(parent.chunk_size) // (2 * np.array(child.chunk_size))


def chunk_shards(chunks: np.ndarray, scale: Scale) -> np.ndarray:
    """The shard of `scale` each of its chunks (n, 3) lies in."""
    return shards_of_codes(compressed_morton_codes(chunks, grid_bits(scale.grid)), scale.sharding)


def plan_downres_scale(dest_url: str, scale: int, *, rule: str = "tensorstore", only_missing: bool = False, shards_per_task: int = 4) -> Manifest:
    """One job per output shard of `scale` that has data below it, naming the parent shard files it
    reads: the parent scale's chunks (from its shard indices), halved, grouped by output shard."""
    if scale < 1:
        raise PlanError("downres makes scale 1 and above from the scale below; scale 0 comes from DVID")
    info = read_info(dest_url)
    scales = scales_of(info)
    if scale >= len(scales):
        raise PlanError(f"{dest_url}info has {len(scales)} scales; there is no scale {scale}")
    parent, target = scales[scale - 1], scales[scale]
    parent_files = sorted(shard_files(dest_url, parent.key))
    if not parent_files:
        raise PlanError(f"{dest_url}{parent.key}: the parent scale has no shards yet; build scale {scale - 1} first")
    sources: dict[int, set[str]] = {}
    children: dict[int, set[tuple[int, int, int]]] = {}
    for name in parent_files:
        chunks = shard_chunks(dest_url, parent, name)
        above = chunks_above(chunks, parent, target)
        for shard, child in zip(chunk_shards(above, target).tolist(), above.tolist()):
            sources.setdefault(shard, set()).add(name)
            children.setdefault(shard, set()).add(tuple(child))
    existing = shard_files(dest_url, target.key) if only_missing else set()
    jobs = []
    for shard in sorted(sources):
        name = shard_file_name(shard, target.sharding.shard_bits)
        if name in existing:
            continue
        count = len(children[shard])
        jobs.append(ShardJob(name, shard, count, shard_memory(count, downres_source_bytes(parent), scale, holds_voxels=False), parent_shards=sorted(sources[shard])))
    return Manifest("downres", dest_url, scale, target.key, group_into_tasks(jobs, shards_per_task), rule=rule)


def tier_table(manifest: Manifest) -> list[dict[str, Any]]:
    """Per tier: shards, tasks, chunks and the largest memory estimate (the dry run prints this)."""
    rows: dict[int, dict[str, Any]] = {}
    for task in manifest.tasks:
        row = rows.setdefault(task.tier_gib, {"tier_gib": task.tier_gib, "tasks": 0, "shards": 0, "chunks": 0, "max_memory_gib": 0.0})
        row["tasks"] += 1
        row["shards"] += len(task.shards)
        row["chunks"] += sum(s.chunks for s in task.shards)
        row["max_memory_gib"] = max(row["max_memory_gib"], round(task.memory_bytes / GIB, 2))
    return [rows[t] for t in sorted(rows)]
