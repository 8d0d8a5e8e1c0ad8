"""What every source model provides, and the readers they share."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from connectome_assets.connectome import files
from connectome_assets.connectome.errors import CatalogError, SourceError
from connectome_assets.connectome.normalize import (
    build_attributes,
    normalize_neuron_ids,
    normalize_text,
    normalize_weight,
)
from connectome_assets.connectome.schemas import CONNECTION_SCHEMA, NEURON_SCHEMA, NEURON_TEXT_COLUMNS

# Large enough that per-batch overheads vanish, small enough that memory stays bounded.
CONNECTION_BATCH_ROWS = 1 << 20


class SourceModel(abc.ABC):
    """A release format. Reads neurons whole (they are small) and streams connections."""

    name: ClassVar[str]
    required_sources: ClassVar[tuple[str, ...]] = ()
    optional_sources: ClassVar[tuple[str, ...]] = ()
    # Tables whose rows are sent to the platform (over Flight) instead of read from source files.
    received_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sources: Mapping[str, str], options: Mapping[str, Any], location: str) -> None:
        missing = [key for key in self.required_sources if key not in sources]
        if missing:
            raise CatalogError(location, f"source model '{self.name}' needs source(s) {', '.join(missing)}")
        unknown = sorted(set(sources) - set(self.required_sources) - set(self.optional_sources))
        if unknown:
            allowed = ", ".join(self.required_sources + self.optional_sources) or "none"
            raise CatalogError(location, f"source model '{self.name}' has no source named {', '.join(unknown)} (allowed: {allowed})")
        self.sources = dict(sources)
        self.options = dict(options)
        self.location = location

    def source_uris(self) -> list[str]:
        return list(self.sources.values())

    def fingerprint(self) -> str:
        """The data version of the dataset's sources: changes whenever a source file does."""
        return files.combined_fingerprint(self.source_uris())

    @abc.abstractmethod
    def read_neurons(self) -> pa.Table:
        """The annotated neurons as a NEURON_SCHEMA table with unique ids."""

    @abc.abstractmethod
    def check_connections(self) -> None:
        """Open the connection source and check its columns and types, without reading rows."""

    @abc.abstractmethod
    def connection_stream(self) -> ConnectionStream:
        """Every connection row of the source as stored (integer id columns), and how to make a
        batch of them canonical."""

    def connection_rows(self) -> int | None:
        """How many connection rows the source holds, when its metadata tells without reading them
        (the total of an import's progress, for its ETA); None when only reading would tell."""
        return None

    def iter_connections(self) -> Iterator[pa.RecordBatch]:
        """Every connection row, unfiltered, as CONNECTION_SCHEMA batches (demo, exports)."""
        stream = self.connection_stream()
        for batch in stream.batches:
            yield stream.canonical(batch)


@dataclass(frozen=True)
class ConnectionStream:
    """A source's connection rows before canonicalisation.

    The endpoint filter runs on `pre_column` / `post_column` (integer ids) of the raw batches, so
    only the rows it keeps are canonicalised and value-checked: at male CNS scale 83% of the rows
    are dropped and never converted. Canonicalising a kept batch still rejects negative ids,
    fractional or negative weights, with the file named.
    """

    batches: Iterator[pa.RecordBatch]
    pre_column: str
    post_column: str
    canonical: Callable[[pa.RecordBatch], pa.RecordBatch]


def require_columns(location: str, available: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in available]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        raise SourceError(location, f"missing required column {names} (found: {', '.join(available)})")


def canonical_neurons(
    location: str,
    ids: pa.Array | pa.ChunkedArray,
    id_column: str,
    text: Mapping[str, pa.Array | pa.ChunkedArray],
    extra: Mapping[str, pa.Array | pa.ChunkedArray],
) -> pa.Table:
    """Assemble NEURON_SCHEMA rows; duplicate ids are an error, never silently merged."""
    neuron_ids = normalize_neuron_ids(ids, location, id_column)
    if len(neuron_ids) == 0:
        raise SourceError(location, "has no neuron rows")
    counts = pc.value_counts(neuron_ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        shown = ", ".join(str(v) for v in repeated[:5].to_pylist())
        raise SourceError(location, f"has {len(repeated)} duplicate neuron id(s) in '{id_column}' (e.g. {shown})")
    n = len(neuron_ids)
    columns: dict[str, pa.Array] = {"neuron_id": neuron_ids}
    for column in NEURON_TEXT_COLUMNS:
        columns[column] = normalize_text(text[column]) if column in text else pa.array([""] * n, pa.string())
    columns["attributes"] = build_attributes(extra, n)
    return pa.Table.from_pydict(columns, schema=NEURON_SCHEMA)


def empty_strings(rows: int) -> pa.Array:
    """A column of '' built from zeroed offsets (no per-row work)."""
    return pa.StringArray.from_buffers(rows, pa.py_buffer(np.zeros(rows + 1, dtype=np.int32)), pa.py_buffer(b""))


def canonical_connections(
    location: str,
    pre: pa.Array | pa.ChunkedArray,
    post: pa.Array | pa.ChunkedArray,
    weight: pa.Array | pa.ChunkedArray,
    names: tuple[str, str, str],
    synapse_class: pa.Array | pa.ChunkedArray | None = None,
    neuropil: pa.Array | pa.ChunkedArray | None = None,
) -> pa.RecordBatch:
    empty = empty_strings(len(pre)) if synapse_class is None or neuropil is None else None
    return pa.RecordBatch.from_arrays(
        [
            normalize_neuron_ids(pre, location, names[0]),
            normalize_neuron_ids(post, location, names[1]),
            normalize_weight(weight, location, names[2]),
            normalize_text(synapse_class) if synapse_class is not None else empty,
            normalize_text(neuropil) if neuropil is not None else empty,
        ],
        schema=CONNECTION_SCHEMA,
    )


def with_integer_ids(batch: pa.RecordBatch, columns: Sequence[str], location: str) -> pa.RecordBatch:
    """Id columns the filter can probe: integers pass through, numeric strings are converted."""
    for column in columns:
        index = batch.schema.get_field_index(column)
        if not pa.types.is_integer(batch.schema.field(index).type):
            batch = batch.set_column(index, column, normalize_neuron_ids(batch.column(index), location, column))
    return batch


def _arrow_problem(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def open_feather(uri: str, options: pa.ipc.IpcReadOptions | None = None) -> pa.ipc.RecordBatchFileReader:
    """A Feather v2 / Arrow IPC file reader; a truncated or foreign file is a SourceError."""
    source = files.open_random_access(uri)
    try:
        return pa.ipc.open_file(source, options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        size = source.size()
        source.close()
        if size == 0:
            raise SourceError(uri, "is empty (0 bytes); expected a Feather (Arrow IPC) file") from None
        raise SourceError(uri, f"is truncated or not a Feather v2 (Arrow IPC) file ({_arrow_problem(exc)})") from None


def check_column_kinds(location: str, schema: pa.Schema, ids: Sequence[str], numbers: Sequence[str] = ()) -> None:
    """Refuse, before any row is read, columns whose type can never hold ids or counts."""
    for column in ids:
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise SourceError(location, f"column '{column}' has type {kind}; neuron ids must be integers or numeric strings")
    for column in numbers:
        kind = schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise SourceError(location, f"column '{column}' has type {kind}; weights must be numeric")


def feather_row_count(uri: str) -> int | None:
    """The rows of a local Feather file, from its record batches' metadata (about 0.1 s for 2,300
    batches); None for a remote one, where each batch's metadata would be one ranged request."""
    fs, _ = files.filesystem_for(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    try:
        return open_feather(uri).count_rows()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(uri, f"has record batch metadata that cannot be read; the file may be corrupt ({_arrow_problem(exc)})") from None


def read_feather_table(uri: str) -> pa.Table:
    reader = open_feather(uri)
    try:
        return reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(uri, f"cannot be read to the end; it may be truncated ({_arrow_problem(exc)})") from None


def iter_feather_batches(uri: str, columns: Sequence[str], rows: int = CONNECTION_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Only the named columns, as batches of about `rows` rows (small stored batches are
    coalesced, large ones sliced), so per-batch overheads vanish and memory stays bounded."""
    schema = open_feather(uri).schema
    wanted = [schema.get_field_index(c) for c in columns]
    reader = open_feather(uri, pa.ipc.IpcReadOptions(included_fields=wanted, use_threads=True))
    pending: list[pa.RecordBatch] = []
    count = 0
    for index in range(reader.num_record_batches):
        try:
            batch = reader.get_batch(index)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(uri, f"record batch {index} cannot be read; the file may be corrupt ({_arrow_problem(exc)})") from None
        for start in range(0, batch.num_rows, rows):
            piece = batch.slice(start, rows)
            pending.append(piece)
            count += piece.num_rows
            if count >= rows:
                yield pa.concat_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.concat_batches(pending)


def open_csv(uri: str, column_types: Mapping[str, pa.DataType], required: Sequence[str]) -> pacsv.CSVStreamingReader:
    """A streaming CSV reader (gzip by extension) whose header has every required column."""
    stream = files.open_stream(uri)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(column_types=dict(column_types), strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        problem = _arrow_problem(exc)
        if "Empty CSV file" in problem:
            raise SourceError(uri, "is empty; expected a CSV header and rows") from None
        raise SourceError(uri, f"cannot be read as CSV ({problem})") from None
    require_columns(uri, reader.schema.names, required)
    return reader


def iter_csv_batches(reader: pacsv.CSVStreamingReader, uri: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise SourceError(uri, f"has a row that cannot be read ({_arrow_problem(exc)})") from None
        yield batch


def read_csv_table(uri: str, column_types: Mapping[str, pa.DataType], required: Sequence[str]) -> pa.Table:
    reader = open_csv(uri, column_types, required)
    batches = list(iter_csv_batches(reader, uri))
    return pa.Table.from_batches(batches, schema=reader.schema)


def align_side_table(location: str, neuron_ids: pa.Array, other: pa.Table, key: str) -> pa.Table:
    """Rows of a per-neuron side table in the order of `neuron_ids` (nulls where absent).

    Rows for ids that are not annotated neurons are ignored: the annotations define the dataset.
    """
    other_ids = normalize_neuron_ids(other[key], location, key)
    counts = pc.value_counts(other_ids)
    if len(pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))):
        raise SourceError(location, f"has duplicate ids in '{key}'")
    positions = pc.index_in(neuron_ids, value_set=other_ids)
    return other.drop_columns([key]).take(positions)
