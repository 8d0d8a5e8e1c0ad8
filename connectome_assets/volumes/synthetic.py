"""Writing DVID `export-shards` output from a label volume, with our own block encoder.

For the demo, the tests and benchmarks: the files are laid out exactly as DVID writes them
(dvid-formats.md §1): `<dir>/s<k>/<ox>_<oy>_<oz>.arrow`, an Arrow IPC stream with one record
batch per non-zero 64³ block, and its `.csv` index in the current format (`# schema_size=N`,
then `x,y,z,offset,size,batch_idx`); `export.log` last. Blocks hold supervoxel ids; the `labels`
column maps each block's table to agglomerated labels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import zstandard

from connectome_assets.volumes.block_codec import encode_block
from connectome_assets.volumes.precomputed import CHUNK, scales_of
from connectome_assets.volumes.shard_reader import EXPECTED_SCHEMA
from connectome_assets.volumes.sharding import shard_shape


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
        stem = directory / "_".join(str(o) for o in origin)
        sink = io.BytesIO()
        rows = []
        with pa.ipc.new_stream(sink, EXPECTED_SCHEMA) as writer:
            schema_size = sink.tell()
            for (cx, cy, cz), block in blocks:
                table = np.unique(block)
                encoded = encode_block(block, table)
                mapped = np.array([(labels or {}).get(int(v), int(v)) for v in table], np.uint64)
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
                rows.append(f"{cx},{cy},{cz},{start},{sink.tell() - start},0")
        stem.with_suffix(".arrow").write_bytes(sink.getvalue())
        stem.with_suffix(".csv").write_text(f"# schema_size={schema_size}\nx,y,z,offset,size,batch_idx\n" + "\n".join(rows) + "\n")
        written += [stem.with_suffix(".arrow"), stem.with_suffix(".csv")]
    return written


def finish_export(export_dir: str | Path, note: str = "") -> Path:
    """`export.log`, which DVID writes once the export has finished: its presence marks a complete export."""
    log = Path(export_dir) / "export.log"
    log.write_text(f"export-shards finished\n{note}\n")
    return log
