"""The neuroglancer precomputed volume we write: its `info`, its scales, its shard files.

The info is written once, whole, before any scale, from a neuroglancer multiscale volume spec
(the JSON DVID's `export-shards` took, e.g. `mcns-ng-specs.json`). Every scale is then opened
through tensorstore's `neuroglancer_precomputed` driver, which does the compressed_segmentation
encoding and the sharding; destinations are `file://…` or `gs://…` URLs (or local paths).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import tensorstore as ts

from connectome_assets.volumes.sharding import ShardingSpec, chunk_grid

CHUNK = 64  # one DVID block is one neuroglancer chunk (export-shards requires 64³)
CSEG_BLOCK = [8, 8, 8]


class VolumeSpecError(ValueError):
    """A volume spec (or info) the platform cannot write; the message names the file."""


@dataclass(frozen=True)
class Scale:
    index: int
    key: str
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    sharding: ShardingSpec

    @property
    def grid(self) -> tuple[int, int, int]:
        return chunk_grid(self.size, self.chunk_size)


def destination_url(dest: str) -> str:
    """`file://…` or `gs://…` with a trailing slash; a bare path becomes an absolute file URL."""
    parsed = urlparse(dest)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else os.path.abspath(os.path.expanduser(dest))
        return f"file://{path.rstrip('/')}/"
    if parsed.scheme == "gs":
        return dest.rstrip("/") + "/"
    raise VolumeSpecError(f"{dest}: a volume destination is a local path, file:// or gs:// URL")


def kvstore_spec(url: str) -> dict[str, Any]:
    """The tensorstore kvstore of a destination URL."""
    parsed = urlparse(url)
    if parsed.scheme == "gs":
        return {"driver": "gcs", "bucket": parsed.netloc, "path": parsed.path.lstrip("/")}
    return {"driver": "file", "path": parsed.path}


def load_spec(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VolumeSpecError(f"{path}: cannot read the volume spec ({exc})") from None


def info_from_spec(spec: Mapping[str, Any], source: str, z_compress: int = 0) -> dict[str, Any]:
    """The multiscale `info` for a spec, checked: uint64 segmentation, sharded scales of 64³ chunks
    (64×64×64/(N+1) at s0 with `z_compress` N), and cseg blocks of 8³ (the exporter's lesson: a
    default of 64³ blocks ran out of memory and silently mismatched)."""
    info = copy.deepcopy(dict(spec))
    info.pop("batch_size", None)  # DVID's own field, not part of a neuroglancer info
    info["@type"] = "neuroglancer_multiscale_volume"
    info.setdefault("type", "segmentation")
    if info.get("data_type") != "uint64" or info.get("num_channels", 1) != 1:
        raise VolumeSpecError(f"{source}: a segmentation spec has data_type uint64 and one channel, not {info.get('data_type')}")
    scales = info.get("scales") or []
    if not scales:
        raise VolumeSpecError(f"{source}: the spec has no scales")
    for index, scale in enumerate(scales):
        expected = [CHUNK, CHUNK, CHUNK // (z_compress + 1)] if index == 0 else [CHUNK, CHUNK, CHUNK]
        if scale.get("chunk_sizes") != [expected]:
            raise VolumeSpecError(f"{source}: scale {index} ({scale.get('key')}) has chunk sizes {scale.get('chunk_sizes')}, expected [{expected}]")
        if scale.get("encoding") != "compressed_segmentation":
            raise VolumeSpecError(f"{source}: scale {index} ({scale.get('key')}) is not compressed_segmentation")
        if "sharding" not in scale:
            raise VolumeSpecError(f"{source}: scale {index} ({scale.get('key')}) is not sharded")
        try:
            ShardingSpec.from_info(scale["sharding"])
        except (KeyError, ValueError) as exc:
            raise VolumeSpecError(f"{source}: scale {index} ({scale.get('key')}): {exc}") from None
        # 8³ blocks: a DVID sub-block is one (the transcoder), and every 2×2×2 group of a downres
        # stays inside one block of one parent chunk (cseg_downsample).
        if scale.setdefault("compressed_segmentation_block_size", CSEG_BLOCK) != CSEG_BLOCK:
            raise VolumeSpecError(f"{source}: scale {index} ({scale.get('key')}) has compressed_segmentation blocks of {scale['compressed_segmentation_block_size']}, expected {CSEG_BLOCK}")
        scale.setdefault("voxel_offset", [0, 0, 0])
    if z_compress and 64 % (z_compress + 1):
        raise VolumeSpecError(f"{source}: z_compress {z_compress} must divide 64 slices evenly (N+1 a power of two)")
    if z_compress >= CHUNK // 2:  # an odd (1-slice) s0 chunk would split scale 1's 2×2×2 groups between chunks
        raise VolumeSpecError(f"{source}: z_compress {z_compress} leaves s0 chunks 1 slice deep; at most {CHUNK // 2 - 1} (2 slices a chunk)")
    return info


def chunk_box(chunk: Sequence[int], scale: Scale, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The voxels [start, end) of a chunk of `scale`, clipped to the volume; empty (some end <= start)
    for a chunk outside it. `depth` overrides the chunk's z extent (a z-compressed DVID block)."""
    extent = np.array([CHUNK, CHUNK, scale.chunk_size[2] if depth is None else depth])
    origin = np.asarray(chunk) * extent
    low = np.array(scale.voxel_offset)
    return np.maximum(origin, low), np.minimum(origin + extent, low + scale.size)


def scales_of(info: Mapping[str, Any]) -> list[Scale]:
    return [
        Scale(
            index=i,
            key=s["key"],
            size=tuple(s["size"]),  # type: ignore[arg-type]
            chunk_size=tuple(s["chunk_sizes"][0]),  # type: ignore[arg-type]
            resolution=tuple(s["resolution"]),  # type: ignore[arg-type]
            voxel_offset=tuple(s.get("voxel_offset", [0, 0, 0])),  # type: ignore[arg-type]
            sharding=ShardingSpec.from_info(s["sharding"]),
        )
        for i, s in enumerate(info["scales"])
    ]


def write_info(dest_url: str, info: Mapping[str, Any]) -> None:
    """Write the whole multiscale info first; an existing different info is an error, never overwritten."""
    store = ts.KvStore.open(kvstore_spec(dest_url)).result()
    existing = store.read("info").result()
    if existing.state == "value":
        if json.loads(bytes(existing.value)) != json.loads(json.dumps(info)):
            raise VolumeSpecError(f"{dest_url}info already exists and differs from the spec; write to an empty destination")
        return
    store.write("info", json.dumps(info, indent=1).encode()).result()


def read_info(dest_url: str) -> dict[str, Any]:
    found = ts.KvStore.open(kvstore_spec(dest_url)).result().read("info").result()
    if found.state != "value":
        raise VolumeSpecError(f"{dest_url}: no info file; materialize ng_info first")
    return json.loads(bytes(found.value))


def open_scale(dest_url: str, scale: int) -> ts.TensorStore:
    """Scale `scale` of the volume, open for reading and writing (domain x, y, z, channel)."""
    return ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": kvstore_spec(dest_url), "scale_index": scale, "recheck_cached_data": False},
        read=True,
        write=True,
    ).result()


def shard_files(dest_url: str, scale_key: str) -> set[str]:
    """Names of the `.shard` files a scale has in the destination."""
    store = ts.KvStore.open(kvstore_spec(dest_url)).result()
    keys = store.list(ts.KvStore.KeyRange(f"{scale_key}/", f"{scale_key}0")).result()
    return {bytes(k).decode().rsplit("/", 1)[-1] for k in keys if bytes(k).endswith(b".shard")}


def neuroglancer_link(dest_url: str) -> str:
    """The `precomputed://` source a neuroglancer layer opens (gs:// as is; file:// for local viewers)."""
    return f"precomputed://{dest_url.rstrip('/')}"
