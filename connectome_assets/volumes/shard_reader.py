"""Reading DVID `export-shards` output: `<origin>.arrow` (an Arrow IPC *stream*, one record batch
per block) and its `<origin>.csv` chunk index, in any of DVID's three index formats:

- old:          `x,y,z,rec`                                   (rec = record batch number)
- transitional: `# schema_size=N` then `x,y,z,rec,offset,size`
- current:      `# schema_size=N` then `x,y,z,offset,size,batch_idx`

Chunks are found by their coordinates through the index, never by row position (DVID writes rows
in no particular order). With `schema_size=0` (Go Arrow writes the schema lazily) a row at offset
0 also covers the schema message; the reader steps over it. Formats: dvid-formats.md §1.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import zstandard

from connectome_assets.volumes.block_codec import BlockFormatError, decode_block

EXPECTED_SCHEMA = pa.schema(
    [
        pa.field("chunk_x", pa.int32(), nullable=False),
        pa.field("chunk_y", pa.int32(), nullable=False),
        pa.field("chunk_z", pa.int32(), nullable=False),
        pa.field("labels", pa.list_(pa.uint64()), nullable=False),
        pa.field("supervoxels", pa.list_(pa.uint64()), nullable=False),
        pa.field("dvid_compressed_block", pa.binary(), nullable=False),
        pa.field("uncompressed_size", pa.uint32(), nullable=False),
    ]
)

Coordinate = tuple[int, int, int]


class ShardFormatError(ValueError):
    """A shard or index that does not follow the export-shards format; names the file and chunk."""


@dataclass(frozen=True)
class ChunkRecord:
    coordinate: Coordinate
    labels: np.ndarray
    supervoxels: np.ndarray
    compressed_block: bytes
    uncompressed_size: int


@dataclass(frozen=True)
class _Location:
    offset: int | None  # None: old format, found by scanning the stream
    size: int | None
    batch_index: int
    record: int | None


def _read_index(path: Path) -> tuple[int | None, dict[Coordinate, _Location], list[Coordinate]]:
    schema_size: int | None = None
    lines: list[str] = []
    try:
        with open(path, newline="") as handle:
            for line in handle:
                if line.startswith("#"):
                    key, _, value = line[1:].strip().partition("=")
                    if key.strip() == "schema_size":
                        schema_size = int(value)
                elif line.strip():
                    lines.append(line)
    except (OSError, ValueError) as exc:
        raise ShardFormatError(f"{path}: cannot read the chunk index ({exc})") from None
    if not lines:
        raise ShardFormatError(f"{path}: the chunk index is empty")
    reader = csv.DictReader(lines)
    columns = set(reader.fieldnames or [])
    formats = ({"x", "y", "z", "offset", "size", "batch_idx"}, {"x", "y", "z", "rec", "offset", "size"}, {"x", "y", "z", "rec"})
    if not any(f <= columns for f in formats):
        raise ShardFormatError(f"{path}: unknown chunk index header {sorted(columns)}")
    index: dict[Coordinate, _Location] = {}
    order: list[Coordinate] = []
    for number, row in enumerate(reader, start=1):
        try:
            coordinate = (int(row["x"]), int(row["y"]), int(row["z"]))
            has_offsets = "offset" in columns
            location = _Location(
                offset=int(row["offset"]) if has_offsets else None,
                size=int(row["size"]) if has_offsets else None,
                batch_index=int(row.get("batch_idx") or 0),
                record=int(row["rec"]) if "rec" in columns else None,
            )
        except (TypeError, ValueError):
            raise ShardFormatError(f"{path}: index row {number} is not numeric: {row}") from None
        if coordinate in index:
            raise ShardFormatError(f"{path}: chunk {coordinate} is listed twice")
        index[coordinate] = location
        order.append(coordinate)
    return schema_size, index, order


class DvidShardReader:
    """Random access to the chunks of one export shard, by chunk coordinate."""

    def __init__(self, arrow_path: str | Path, index_path: str | Path | None = None) -> None:
        self.arrow_path = Path(arrow_path)
        self.index_path = Path(index_path) if index_path else self.arrow_path.with_suffix(".csv")
        if not self.arrow_path.is_file():
            raise ShardFormatError(f"{self.arrow_path}: shard file does not exist")
        self._file = pa.memory_map(str(self.arrow_path))
        try:
            schema_message = pa.ipc.read_message(self._file)
            self.schema = pa.ipc.read_schema(schema_message)
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise ShardFormatError(f"{self.arrow_path}: not an Arrow IPC stream ({str(exc).splitlines()[0]})") from None
        self._schema_bytes = self._file.tell()
        self._check_schema()
        schema_size, self._index, self.chunks = _read_index(self.index_path)
        if any(loc.offset is None for loc in self._index.values()):
            self._locate_records()
        self._decompressor = zstandard.ZstdDecompressor()

    def _check_schema(self) -> None:
        found = {f.name: f.type for f in self.schema}
        for field in EXPECTED_SCHEMA:
            if field.name not in found:
                raise ShardFormatError(f"{self.arrow_path}: wrong schema, no column '{field.name}' (found {', '.join(found)})")
            if found[field.name] != field.type:
                raise ShardFormatError(f"{self.arrow_path}: wrong schema, column '{field.name}' is {found[field.name]}, expected {field.type}")

    def _locate_records(self) -> None:
        """Old index format: find each record batch's byte range by walking the stream once."""
        offsets: list[tuple[int, int]] = []
        self._file.seek(self._schema_bytes)
        while True:
            start = self._file.tell()
            try:
                message = pa.ipc.read_message(self._file)
            except (pa.ArrowInvalid, OSError, EOFError, StopIteration):
                break  # an aborted export may end without an end-of-stream marker
            if message is None:
                break
            offsets.append((start, self._file.tell() - start))
        located = {}
        for coordinate, location in self._index.items():
            if location.record is None or location.record >= len(offsets):
                raise ShardFormatError(f"{self.index_path}: chunk {coordinate} names record {location.record}, the stream has {len(offsets)}")
            offset, size = offsets[location.record]
            located[coordinate] = _Location(offset, size, 0, location.record)
        self._index = located

    def __len__(self) -> int:
        return len(self.chunks)

    def __contains__(self, coordinate: Coordinate) -> bool:
        return tuple(coordinate) in self._index

    def read(self, coordinate: Coordinate) -> ChunkRecord:
        coordinate = tuple(int(c) for c in coordinate)  # type: ignore[assignment]
        location = self._index.get(coordinate)
        if location is None:
            raise ShardFormatError(f"{self.arrow_path}: chunk {coordinate} is not in the index {self.index_path.name}")
        offset = location.offset
        if offset == 0:  # schema_size=0: this row's range also covers the schema message
            offset = self._schema_bytes
        where = f"{self.arrow_path}: chunk {coordinate} at byte {offset}"
        try:
            self._file.seek(offset)
            message = pa.ipc.read_message(self._file)
            batch = pa.ipc.read_record_batch(message, self.schema)
        except (pa.ArrowInvalid, OSError, EOFError, ValueError) as exc:
            raise ShardFormatError(f"{where} cannot be read; the file may be truncated ({str(exc).splitlines()[0]})") from None
        if location.batch_index >= batch.num_rows:
            raise ShardFormatError(f"{where}: row {location.batch_index} of a {batch.num_rows}-row batch")
        row = batch.slice(location.batch_index, 1)
        stored = (row["chunk_x"][0].as_py(), row["chunk_y"][0].as_py(), row["chunk_z"][0].as_py())
        if stored != coordinate:
            raise ShardFormatError(f"{where}: the CSV index disagrees with the Arrow file, which holds chunk {stored} there")
        return ChunkRecord(
            coordinate=coordinate,
            labels=row["labels"][0].values.to_numpy(zero_copy_only=False).astype(np.uint64),
            supervoxels=row["supervoxels"][0].values.to_numpy(zero_copy_only=False).astype(np.uint64),
            compressed_block=row["dvid_compressed_block"][0].as_py(),
            uncompressed_size=row["uncompressed_size"][0].as_py(),
        )

    def decode(self, coordinate: Coordinate, supervoxels: bool = False) -> np.ndarray:
        """The chunk's voxels, (z, y, x) uint64: agglomerated labels, or its own supervoxels."""
        record = self.read(coordinate)
        where = f"{self.arrow_path}: chunk {record.coordinate}"
        try:
            block = self._decompressor.decompress(record.compressed_block, max_output_size=max(record.uncompressed_size, 1))
        except zstandard.ZstdError as exc:
            raise ShardFormatError(f"{where}: the zstd frame does not decode ({exc})") from None
        if len(block) != record.uncompressed_size:
            raise ShardFormatError(f"{where}: {len(block)} bytes after zstd, the row says {record.uncompressed_size}")
        try:
            return decode_block(block, None if supervoxels else record.labels)
        except BlockFormatError as exc:
            raise ShardFormatError(f"{where}: {exc}") from None

    def __iter__(self) -> Iterator[ChunkRecord]:
        for coordinate in self.chunks:
            yield self.read(coordinate)

    def close(self) -> None:
        self._file.close()
