"""Writing DVID `export-shards` output from a label volume, with our own block encoder.

For the demo, the tests and benchmarks: the files are laid out exactly as DVID writes them
(dvid-formats.md §1): `<dir>/s<k>/<ox>_<oy>_<oz>.arrow`, an Arrow IPC stream with one record
batch per non-zero 64³ block, and its `.csv` index in the current format (`# schema_size=N`,
then `x,y,z,offset,size,batch_idx`); `export.log` last. Blocks hold supervoxel ids; the `labels`
column maps each block's table to agglomerated labels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import zstandard

from connectome_assets.volumes.block_codec import encode_block
from connectome_assets.volumes.precomputed import CHUNK, scales_of
from connectome_assets.volumes.shard_reader import EXPECTED_SCHEMA
from connectome_assets.volumes.sharding import chunk_grid, grid_bits, shard_shape


def multiscale_spec(
    size: tuple[int, int, int], scales: int, resolution: float = 8.0, z_chunk: int = 64, preshift_bits: int = 2, minishard_bits: int = 1
) -> dict[str, Any]:
    """A neuroglancer volume spec as DVID's export-shards takes it, each scale sharded so every shard
    is one cubic region (preshift + minishard bits a multiple of 3, shard bits covering the rest of
    the grid: DVID's shard file names assume that)."""

    def scale(k: int) -> dict[str, Any]:
        extent = [max(1, -(-s // 2**k)) for s in size]
        chunk = [64, 64, z_chunk if k == 0 else 64]
        bits = sum(grid_bits(chunk_grid(extent, chunk)))
        return {
            "key": f"{int(resolution * 2**k)}nm",
            "size": extent,
            "resolution": [resolution * 2**k] * 3,
            "chunk_sizes": [chunk],
            "encoding": "compressed_segmentation",
            "sharding": {
                "@type": "neuroglancer_uint64_sharded_v1",
                "hash": "identity",
                "preshift_bits": preshift_bits,
                "minishard_bits": minishard_bits,
                "shard_bits": max(bits - preshift_bits - minishard_bits, 0),
                "minishard_index_encoding": "gzip",
                "data_encoding": "gzip",
            },
        }

    return {"@type": "neuroglancer_multiscale_volume", "type": "segmentation", "data_type": "uint64", "num_channels": 1, "scales": [scale(k) for k in range(scales)]}


def neurite_volume(shape_zyx: tuple[int, int, int], neurites: int = 40, seed: int = 0) -> np.ndarray:
    """Supervoxels shaped like neurites: tubes of random radius along random segments, later ones
    over earlier ones, ids above 2**32 as real ones are; background 0."""
    rng = np.random.default_rng(seed)
    shape = np.array(shape_zyx, dtype=np.float64)
    starts, ends = rng.random((neurites, 3)) * shape, rng.random((neurites, 3)) * shape
    radii = rng.uniform(3, 12, neurites)
    ids = (2**33 + 1000 * np.arange(1, neurites + 1)).astype(np.uint64)
    volume = np.zeros(shape_zyx, np.uint64)
    _draw_tubes(volume, starts, ends, radii, ids)
    return volume


@numba.njit(cache=True, parallel=True)
def _draw_tubes(volume, starts, ends, radii, ids):  # pragma: no cover - compiled
    nz, ny, nx = volume.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                for k in range(len(ids)):
                    ax, ay, az = starts[k, 0], starts[k, 1], starts[k, 2]
                    dx, dy, dz = ends[k, 0] - ax, ends[k, 1] - ay, ends[k, 2] - az
                    length2 = dx * dx + dy * dy + dz * dz
                    t = ((z - ax) * dx + (y - ay) * dy + (x - az) * dz) / length2 if length2 > 0 else 0.0
                    t = min(max(t, 0.0), 1.0)
                    ez, ey, ex = z - (ax + t * dx), y - (ay + t * dy), x - (az + t * dz)
                    if ez * ez + ey * ey + ex * ex <= radii[k] * radii[k]:
                        volume[z, y, x] = ids[k]


def dvid_shard_edge(grid: tuple[int, int, int], scale_sharding) -> int:
    """DVID's cubic shard edge in voxels: the largest per-dimension shard extent (§1.2)."""
    return max(shard_shape(grid, scale_sharding)) * CHUNK


def write_export_scale(
    export_dir: str | Path, info: Mapping[str, Any], scale_index: int, supervoxels_zyx: np.ndarray, labels: Mapping[int, int] | None = None
) -> list[Path]:
    """Write one scale of an export from a (z, y, x) uint64 supervoxel volume whose origin is voxel
    0; `labels` maps supervoxels to agglomerated labels (identity where absent). Returns the files."""
    scale = scales_of(info)[scale_index]
    volume = np.asarray(supervoxels_zyx, dtype=np.uint64)
    edge = dvid_shard_edge(scale.grid, scale.sharding)
    compressor = zstandard.ZstdCompressor(level=3)
    shards: dict[tuple[int, int, int], list[tuple[tuple[int, int, int], np.ndarray]]] = {}
    nz, ny, nx = volume.shape
    for cz in range(-(-nz // CHUNK)):
        for cy in range(-(-ny // CHUNK)):
            for cx in range(-(-nx // CHUNK)):
                block = np.zeros((CHUNK, CHUNK, CHUNK), np.uint64)
                part = volume[cz * CHUNK : (cz + 1) * CHUNK, cy * CHUNK : (cy + 1) * CHUNK, cx * CHUNK : (cx + 1) * CHUNK]
                block[: part.shape[0], : part.shape[1], : part.shape[2]] = part
                if not block.any():
                    continue  # DVID exports only blocks that hold labels
                origin = tuple(c * CHUNK // edge * edge for c in (cx, cy, cz))
                shards.setdefault(origin, []).append(((cx, cy, cz), block))  # type: ignore[arg-type]
    directory = Path(export_dir) / f"s{scale_index}"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for origin, blocks in sorted(shards.items()):
        rows = []
        for chunk, block in blocks:
            table = np.unique(block)
            mapped = np.array([(labels or {}).get(int(v), int(v)) for v in table], np.uint64)
            rows.append((chunk, encode_block(block, table), table, mapped))
        written += write_shard_files(directory / "_".join(str(o) for o in origin), rows, compressor)
    return written


def write_shard_files(
    stem: Path, rows: Sequence[tuple[tuple[int, int, int], bytes, np.ndarray, np.ndarray]], compressor: zstandard.ZstdCompressor | None = None
) -> list[Path]:
    """One DVID shard, `<stem>.arrow` and its `<stem>.csv` index, from rows of (chunk, DVID block bytes,
    supervoxel table, mapped labels), one record batch each; returns the two files."""
    compressor = compressor or zstandard.ZstdCompressor(level=3)
    sink = io.BytesIO()
    index = []
    with pa.ipc.new_stream(sink, EXPECTED_SCHEMA) as writer:
        schema_size = sink.tell()
        for (cx, cy, cz), encoded, table, mapped in rows:
            batch = pa.record_batch(
                [
                    pa.array([cx], pa.int32()),
                    pa.array([cy], pa.int32()),
                    pa.array([cz], pa.int32()),
                    pa.array([mapped], pa.list_(pa.uint64())),
                    pa.array([table], pa.list_(pa.uint64())),
                    pa.array([compressor.compress(encoded)], pa.binary()),
                    pa.array([len(encoded)], pa.uint32()),
                ],
                schema=EXPECTED_SCHEMA,
            )
            start = sink.tell()
            writer.write_batch(batch)
            index.append(f"{cx},{cy},{cz},{start},{sink.tell() - start},0")
    stem.with_suffix(".arrow").write_bytes(sink.getvalue())
    stem.with_suffix(".csv").write_text(f"# schema_size={schema_size}\nx,y,z,offset,size,batch_idx\n" + "\n".join(index) + "\n")
    return [stem.with_suffix(".arrow"), stem.with_suffix(".csv")]


def finish_export(export_dir: str | Path, note: str = "") -> Path:
    """`export.log`, which DVID writes once the export has finished: its presence marks a complete export."""
    log = Path(export_dir) / "export.log"
    log.write_text(f"export-shards finished\n{note}\n")
    return log
