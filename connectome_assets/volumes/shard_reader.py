"""Reading DVID `export-shards` output: `<origin>.arrow` (an Arrow IPC *stream*, one record batch
per block) and its `<origin>.csv` chunk index, in any of DVID's three index formats:

- old:          `x,y,z,rec`                                   (rec = record batch number)
- transitional: `# schema_size=N` then `x,y,z,rec,offset,size`
- current:      `# schema_size=N` then `x,y,z,offset,size,batch_idx`

Chunks are found by their coordinates through the index, never by row position (DVID writes rows
in no particular order). With `schema_size=0` (Go Arrow writes the schema lazily) a row at offset
0 also covers the schema message; the reader steps over it. Formats: dvid-formats.md §1.

Reading is zero-copy: the file is memory-mapped and a record batch's columns become numpy views
of it. With one batch per chunk (DVID's only batch size), pyarrow's per-batch and per-column
objects cost more than decoding the block, so a batch's buffer list is read straight from its IPC
message header (the flatbuffer `RecordBatch`); anything unusual there (IPC body compression,
nulls, another layout) goes through pyarrow instead.
"""

from __future__ import annotations

import csv
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import zstandard

from connectome_assets.volumes.block_codec import BlockFormatError, decode_block, decode_block_into

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


@dataclass(frozen=True)
class _Row:
    """One chunk's values, views of the file."""

    coordinate: Coordinate
    labels: np.ndarray
    supervoxels: np.ndarray
    compressed_block: np.ndarray
    uncompressed_size: int


class _BadSpan(Exception):
    """A row's list or binary offsets outside its batch's values (the reader names file and chunk)."""


def _span(offsets: tuple[int, int], values: int, what: str) -> tuple[int, int]:
    start, end = offsets
    if not 0 <= start <= end <= values:
        raise _BadSpan(f"its {what} offsets [{start}, {end}) fall outside the {values} values stored")
    return start, end - start


class _MappedBatch:
    """A record batch located in the mapped file: where its buffers start, found from its IPC
    header; a row's values are read or viewed there on demand (cheaper than whole-column views
    when, as in DVID's exports, a batch is a single row)."""

    def __init__(self, data: np.ndarray, rows: int, at: tuple[int, ...], stored: tuple[int, int, int]) -> None:
        self.data, self.rows = data, rows
        # Buffer starts: x, y, z, label offsets, labels, supervoxel offsets, supervoxels, block offsets, block bytes, sizes.
        self.at = at
        self.stored = stored  # labels, supervoxels and block bytes held by the batch

    def coordinate(self, row: int) -> Coordinate:
        data, at = self.data, self.at
        return (
            struct.unpack_from("<i", data, at[0] + 4 * row)[0],
            struct.unpack_from("<i", data, at[1] + 4 * row)[0],
            struct.unpack_from("<i", data, at[2] + 4 * row)[0],
        )

    def row(self, row: int) -> _Row:
        data, at, stored = self.data, self.at, self.stored
        labels = _span(struct.unpack_from("<2i", data, at[3] + 4 * row), stored[0], "labels")
        supervoxels = _span(struct.unpack_from("<2i", data, at[5] + 4 * row), stored[1], "supervoxels")
        block = _span(struct.unpack_from("<2i", data, at[7] + 4 * row), stored[2], "block")
        return _Row(
            coordinate=self.coordinate(row),
            labels=np.frombuffer(data, dtype=np.uint64, count=labels[1], offset=at[4] + 8 * labels[0]),
            supervoxels=np.frombuffer(data, dtype=np.uint64, count=supervoxels[1], offset=at[6] + 8 * supervoxels[0]),
            compressed_block=data[at[8] + block[0] : at[8] + block[0] + block[1]],
            uncompressed_size=struct.unpack_from("<I", data, at[9] + 4 * row)[0],
        )


class _ArrowBatch:
    """A record batch decoded by pyarrow, for the layouts the direct parser leaves alone."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        if any(column.null_count for column in batch.columns):
            raise _Unusual("a non-nullable column holds nulls")
        self.rows = batch.num_rows
        self.x, self.y, self.z = (batch.column(i).to_numpy() for i in range(3))
        self.lists = [(batch.column(i).offsets.to_numpy(), batch.column(i).values.to_numpy()) for i in (3, 4)]
        blocks = batch.column(5)
        _, offsets, values = blocks.buffers()
        self.block_offsets = np.frombuffer(offsets, dtype=np.int32, count=len(blocks) + 1, offset=4 * blocks.offset)
        self.blocks = np.frombuffer(values, dtype=np.uint8) if values is not None else np.empty(0, np.uint8)
        self.sizes = batch.column(6).to_numpy()

    def coordinate(self, row: int) -> Coordinate:
        return int(self.x[row]), int(self.y[row]), int(self.z[row])

    def row(self, row: int) -> _Row:
        (label_offsets, labels), (supervoxel_offsets, supervoxels) = self.lists
        a, n = _span((int(label_offsets[row]), int(label_offsets[row + 1])), labels.size, "labels")
        b, m = _span((int(supervoxel_offsets[row]), int(supervoxel_offsets[row + 1])), supervoxels.size, "supervoxels")
        c, k = _span((int(self.block_offsets[row]), int(self.block_offsets[row + 1])), self.blocks.size, "block")
        return _Row(self.coordinate(row), labels[a : a + n], supervoxels[b : b + m], self.blocks[c : c + k], int(self.sizes[row]))


_NODES, _BUFFERS = 9, 19  # field nodes and buffers of EXPECTED_SCHEMA in IPC order (lists have a child, binary an offsets buffer)
_RECORD_BATCH = 3  # MessageHeader.RecordBatch in Arrow's Message.fbs


class _Unusual(Exception):
    """A batch the direct parser leaves to pyarrow."""


def _flat_table(data: np.ndarray, table: int, fields: int) -> list[int | None]:
    """Absolute positions of a flatbuffer table's first `fields` fields (None where absent)."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    present = (struct.unpack_from("<H", data, vtable)[0] - 4) // 2
    offsets = struct.unpack_from(f"<{min(fields, present)}H", data, vtable + 4)
    return [table + o if o else None for o in offsets] + [None] * (fields - len(offsets))


def _parse_batch(data: np.ndarray, start: int) -> _MappedBatch:
    """The record batch whose IPC message starts at byte `start` of the mapped file.

    Reads the flatbuffer `Message` / `RecordBatch` header (Arrow's Message.fbs) for the body's
    buffer list. Raises EOFError if the file ends inside the message, _Unusual for what it leaves
    to pyarrow (legacy framing, other messages, IPC compression, nulls, another layout).
    """
    size = data.size
    if start < 0 or start + 8 > size:
        raise EOFError("the message header is past the end of the file")
    marker, length = struct.unpack_from("<Ii", data, start)
    if marker != 0xFFFFFFFF:
        raise _Unusual("legacy IPC framing")
    metadata = start + 8
    if length <= 0 or metadata + length > size:
        raise EOFError("the message metadata is past the end of the file")
    message = metadata + struct.unpack_from("<I", data, metadata)[0]
    _, header_type, header, body_length = _flat_table(data, message, 4)
    if header_type is None or data[header_type] != _RECORD_BATCH or header is None or body_length is None:
        raise _Unusual("not a record batch message")
    body = metadata + length
    body_end = body + struct.unpack_from("<q", data, body_length)[0]
    if body_end > size:
        raise EOFError(f"the message body needs {body_end} bytes, the file has {size}")
    batch = header + struct.unpack_from("<I", data, header)[0]
    rows_at, nodes_at, buffers_at, compression = _flat_table(data, batch, 4)
    if compression is not None or rows_at is None or nodes_at is None or buffers_at is None:
        raise _Unusual("compressed or incomplete record batch")
    rows = struct.unpack_from("<q", data, rows_at)[0]
    nodes_vector = nodes_at + struct.unpack_from("<I", data, nodes_at)[0]
    buffers_vector = buffers_at + struct.unpack_from("<I", data, buffers_at)[0]
    if struct.unpack_from("<I", data, nodes_vector)[0] != _NODES or struct.unpack_from("<I", data, buffers_vector)[0] != _BUFFERS:
        raise _Unusual("unexpected field layout")
    nodes = struct.unpack_from(f"<{2 * _NODES}q", data, nodes_vector + 4)  # (length, null count) per field node
    buffers = struct.unpack_from(f"<{2 * _BUFFERS}q", data, buffers_vector + 4)  # (offset, length) per buffer
    if any(nodes[1::2]):
        raise _Unusual("nulls")
    block_bytes = buffers[2 * 16 + 1]
    # (buffer, bytes it must hold): x, y, z, label offsets, labels, supervoxel offsets, supervoxels, block offsets, block bytes, sizes
    needs = (
        (1, 4 * rows),
        (3, 4 * rows),
        (5, 4 * rows),
        (7, 4 * rows + 4),
        (9, 8 * nodes[8]),
        (11, 4 * rows + 4),
        (13, 8 * nodes[12]),
        (15, 4 * rows + 4),
        (16, block_bytes),
        (18, 4 * rows),
    )
    at = []
    for buffer, nbytes in needs:
        offset, held = buffers[2 * buffer], buffers[2 * buffer + 1]
        if offset < 0 or nbytes > held or body + offset + held > body_end:
            raise _Unusual(f"buffer {buffer} does not hold its values")
        at.append(body + offset)
    return _MappedBatch(data, rows, tuple(at), (nodes[8], nodes[12], block_bytes))


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
        self._decompressor = zstandard.ZstdDecompressor()  # one context for every frame
        self._file.seek(0)
        self._data = np.frombuffer(self._file.read_buffer(), dtype=np.uint8)  # zero-copy: the mapping itself
        self._batches: OrderedDict[int, _MappedBatch | _ArrowBatch] = OrderedDict()  # the last few batches read, by offset

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

    def _batch(self, offset: int, coordinate: Coordinate) -> _MappedBatch | _ArrowBatch:
        batch = self._batches.get(offset)
        if batch is not None:
            return batch
        try:
            try:
                batch = _parse_batch(self._data, offset)
            except _Unusual:
                self._file.seek(offset)
                batch = _ArrowBatch(pa.ipc.read_record_batch(pa.ipc.read_message(self._file), self.schema))
        except (pa.ArrowInvalid, OSError, EOFError, ValueError, IndexError, struct.error) as exc:
            where = f"{self.arrow_path}: chunk {coordinate} at byte {offset}"
            raise ShardFormatError(f"{where} cannot be read; the file may be truncated ({str(exc).splitlines()[0]})") from None
        except _Unusual as exc:
            raise ShardFormatError(f"{self.arrow_path}: chunk {coordinate} at byte {offset} cannot be read ({exc})") from None
        self._batches[offset] = batch
        if len(self._batches) > 16:
            self._batches.popitem(last=False)
        return batch

    def _row(self, coordinate: Coordinate) -> _Row:
        """The chunk's values as views of the file."""
        coordinate = tuple(int(c) for c in coordinate)  # type: ignore[assignment]
        location = self._index.get(coordinate)
        if location is None:
            raise ShardFormatError(f"{self.arrow_path}: chunk {coordinate} is not in the index {self.index_path.name}")
        offset = location.offset
        if offset == 0:  # schema_size=0: this row's range also covers the schema message
            offset = self._schema_bytes
        batch = self._batch(offset, coordinate)
        row = location.batch_index
        if row >= batch.rows:
            raise ShardFormatError(f"{self.arrow_path}: chunk {coordinate} at byte {offset}: row {row} of a {batch.rows}-row batch")
        stored = batch.coordinate(row)
        if stored != coordinate:
            raise ShardFormatError(
                f"{self.arrow_path}: chunk {coordinate} at byte {offset}: the CSV index disagrees with the Arrow file, which holds chunk {stored} there"
            )
        try:
            return batch.row(row)
        except _BadSpan as exc:
            raise ShardFormatError(f"{self.arrow_path}: chunk {coordinate} at byte {offset}: {exc}") from None

    def read(self, coordinate: Coordinate) -> ChunkRecord:
        """The chunk's row (copied out of the file)."""
        row = self._row(coordinate)
        return ChunkRecord(
            coordinate=row.coordinate,
            labels=row.labels.astype(np.uint64),
            supervoxels=row.supervoxels.astype(np.uint64),
            compressed_block=row.compressed_block.tobytes(),
            uncompressed_size=row.uncompressed_size,
        )

    def block(self, coordinate: Coordinate, supervoxels: bool = False) -> tuple[bytes, np.ndarray | None, Coordinate]:
        """The chunk's DVID block bytes (zstd removed), the table to map it through (its `labels`;
        None for supervoxels: the block's own) and its coordinate."""
        row = self._row(coordinate)
        try:
            block = self._decompressor.decompress(row.compressed_block, max_output_size=max(row.uncompressed_size, 1))
        except zstandard.ZstdError as exc:
            raise ShardFormatError(f"{self.arrow_path}: chunk {row.coordinate}: the zstd frame does not decode ({exc})") from None
        if len(block) != row.uncompressed_size:
            raise ShardFormatError(f"{self.arrow_path}: chunk {row.coordinate}: {len(block)} bytes after zstd, the row says {row.uncompressed_size}")
        return block, None if supervoxels else row.labels, row.coordinate

    def bad_block(self, coordinate: Coordinate, problem: BlockFormatError) -> ShardFormatError:
        """The one sentence for a block of this shard that does not decode: the file, the chunk, the problem."""
        return ShardFormatError(f"{self.arrow_path}: chunk {coordinate}: {problem}")

    def decode(self, coordinate: Coordinate, supervoxels: bool = False) -> np.ndarray:
        """The chunk's voxels, (z, y, x) uint64: agglomerated labels, or its own supervoxels."""
        block, table, coordinate = self.block(coordinate, supervoxels)
        try:
            return decode_block(block, table)
        except BlockFormatError as exc:
            raise self.bad_block(coordinate, exc) from None

    def decode_into(self, coordinate: Coordinate, out: np.ndarray, supervoxels: bool = False) -> np.ndarray:
        """`decode` into `out`, any writeable uint64 (z, y, x)-indexed view, e.g. an x, y, z buffer's
        `[x0:x0+64, y0:y0+64, z0:z0+64].transpose(2, 1, 0)` (see `decode_block_into`); returns `out`."""
        block, table, coordinate = self.block(coordinate, supervoxels)
        try:
            return decode_block_into(block, table, out)
        except BlockFormatError as exc:
            raise self.bad_block(coordinate, exc) from None

    def __iter__(self) -> Iterator[ChunkRecord]:
        for coordinate in self.chunks:
            yield self.read(coordinate)

    def close(self) -> None:
        self._file.close()
