"""What is at a location: its format's schema, data files, byte sizes and row counts, read from the data itself.

Registration never copies data, so detection reads only metadata: Parquet footers, the Delta log, a
neuroglancer `info` file and file listings. Data pages are never read; a table may be terabytes.
Every problem is an `Invalid` whose one sentence names the location (or the file in it) and what is wrong.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.files import filesystem_for
from connectome_assets.registry.errors import Invalid

FORMATS = ("parquet", "delta", "lance", "iceberg", "neuroglancer_precomputed")

# Formats whose reader is an optional package; without it the files are listed and the schema is taken as declared.
_READERS = {"lance": "lance", "iceberg": "pyiceberg"}

# Footers are fetched concurrently: on object storage each one is a round trip or two.
_FOOTER_THREADS = 16


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # canonical Arrow type string, str(pyarrow type): "int64", "string", "list<item: float>", …
    description: str = ""


@dataclass(frozen=True)
class DataFile:
    uri: str  # full URI: file:///abs/path or gs://bucket/key
    bytes: int
    rows: int | None  # None where not known (volume files, formats without a reader)


@dataclass(frozen=True)
class Detected:
    format: str
    columns: list[Column] | None  # None: the format is not supported for detection here (see `note`)
    volume: dict | None  # neuroglancer only: type, data_type, num_channels and the scales of its info file
    files: list[DataFile]  # every data file, sorted by uri
    bytes: int
    rows: int | None  # None for volumes and formats without a reader
    partition_columns: list[str]
    note: str = ""


def detect(location: str, fmt: str) -> Detected:
    """Validate that `location` holds `fmt` data and describe it; raises `Invalid` naming the problem."""
    if fmt not in FORMATS:
        raise Invalid(f"unknown format '{fmt}' (one of {', '.join(FORMATS)})")
    if fmt == "neuroglancer_precomputed":
        location = location.removeprefix("precomputed://")
    location = location.rstrip("/") or location
    where = _Location.of(location)
    kind = where.kind()
    if kind == pafs.FileType.NotFound:
        raise Invalid(f"{location} does not exist")
    if fmt == "parquet":
        return _detect_parquet(where, kind)
    if kind != pafs.FileType.Directory:
        raise Invalid(f"{location} is a file, but a {fmt} location is a directory")
    if fmt == "delta":
        return _detect_delta(where)
    if fmt == "neuroglancer_precomputed":
        return _detect_volume(where)
    return _undetected(where, fmt)


def normalize_type(declared: str) -> str:
    """The canonical Arrow type string for a declared type: aliases resolved ("utf8" → "string"), others as given."""
    text = declared.strip()
    for candidate in (text, text.lower()):
        try:
            return str(pa.type_for_alias(candidate))
        except ValueError:
            pass
    # Writers name a list's child "element" (Parquet, Delta) or "item" (Arrow); the canonical name is "item".
    return re.sub(r"\b((?:large_|fixed_size_)?list(?:_view)?)<element: ", r"\1<item: ", text)


def schema_diff(declared: list[Column], detected: list[Column]) -> list[dict]:
    """Where a declared schema and the data disagree: declared columns in order, then undeclared ones in data order."""
    found = {c.name: c.type for c in detected}
    named = {c.name for c in declared}
    diff: list[dict] = []
    for column in declared:
        if column.name not in found:
            diff.append({"column": column.name, "problem": "missing", "declared": column.type.strip(), "detected": None})
        elif normalize_type(column.type) != found[column.name]:
            diff.append({"column": column.name, "problem": "type", "declared": column.type.strip(), "detected": found[column.name]})
    for column in detected:
        if column.name not in named:
            diff.append({"column": column.name, "problem": "undeclared", "declared": None, "detected": column.type})
    return diff


# locations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Location:
    """A location as given, its pyarrow filesystem and in-filesystem path."""

    location: str
    fs: pafs.FileSystem
    path: str

    @classmethod
    def of(cls, location: str) -> _Location:
        try:
            fs, path = filesystem_for(location)
        except SourceError as exc:
            raise Invalid(f"{location} cannot be read: {exc.problem}") from None
        return cls(location, fs, path)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def uri(self, path: str) -> str:
        """The full URI of an in-filesystem path."""
        return f"file://{path}" if self.local else f"gs://{path}"

    def kind(self) -> pafs.FileType:
        """File, Directory or NotFound; on object storage a prefix with objects under it is a directory."""
        try:
            info = self.fs.get_file_info(self.path)
            if info.type != pafs.FileType.NotFound:
                return info.type
            listed = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise Invalid(f"{self.location} cannot be inspected ({_first_line(exc)})") from None
        return pafs.FileType.Directory if listed else pafs.FileType.NotFound

    def files_under(self, path: str) -> list[pafs.FileInfo]:
        """Every file below `path` (recursive); none when it does not exist."""
        try:
            listed = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise Invalid(f"{self.uri(path)} cannot be listed ({_first_line(exc)})") from None
        return [info for info in listed if info.type == pafs.FileType.File]


def _first_line(exc: BaseException) -> str:
    """An exception's message cut to one line, so an error stays one sentence."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _summed(files: list[DataFile], fmt: str, columns: list[Column] | None, **extra: Any) -> Detected:
    files = sorted(files, key=lambda f: f.uri)
    counts = [f.rows for f in files]
    rows = None if columns is None or None in counts else sum(counts)  # type: ignore[arg-type]
    return Detected(format=fmt, columns=columns, files=files, bytes=sum(f.bytes for f in files), rows=rows, **extra)


# Arrow types ----------------------------------------------------------------------------
def _canonical_type(t: pa.DataType) -> pa.DataType:
    """The same logical type whichever writer produced it: list children named "item", map fields "key"/"value"."""
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_canonical_type(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        value = t.item_field.with_name("value").with_type(_canonical_type(t.item_type))
        return pa.map_(_canonical_type(t.key_type), value, t.keys_sorted)
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_canonical_item(t), t.list_size)
    for is_kind, build in (
        (pa.types.is_list, pa.list_),
        (pa.types.is_large_list, pa.large_list),
        (pa.types.is_list_view, pa.list_view),
        (pa.types.is_large_list_view, pa.large_list_view),
    ):
        if is_kind(t):
            return build(_canonical_item(t))
    return t


def _canonical_item(t: pa.DataType) -> pa.Field:
    return t.value_field.with_name("item").with_type(_canonical_type(t.value_type))


def _columns(schema: pa.Schema) -> list[Column]:
    return [Column(field.name, str(_canonical_type(field.type))) for field in schema]


# Parquet --------------------------------------------------------------------------------
def _detect_parquet(where: _Location, kind: pafs.FileType) -> Detected:
    if kind == pafs.FileType.File:
        info = where.fs.get_file_info(where.path)
        metadata = _footer(where, info.path)
        data = DataFile(where.uri(info.path), info.size or 0, metadata.num_rows)
        return _summed([data], "parquet", _columns(metadata.schema.to_arrow_schema()), volume=None, partition_columns=[])

    infos = sorted((i for i in where.files_under(where.path) if _is_data_file(where.path, i.path)), key=lambda i: i.path)
    if not infos:
        raise Invalid(f"{where.location} contains no Parquet files")
    with ThreadPoolExecutor(max_workers=_FOOTER_THREADS) as pool:
        footers = list(pool.map(lambda info: _footer(where, info.path), infos))
    first = footers[0].schema.to_arrow_schema()
    for info, footer in zip(infos[1:], footers[1:]):
        _require_same_schema(where, infos[0].path, first, info.path, footer.schema.to_arrow_schema())
    # The dataset adds the hive partition keys (`key=value/` directories) to the files' columns.
    try:
        dataset = ds.dataset([i.path for i in infos], format="parquet", partitioning="hive", partition_base_dir=where.path, filesystem=where.fs)
    except (pa.ArrowException, OSError) as exc:
        raise Invalid(f"{where.location} cannot be read as a Parquet dataset ({_first_line(exc)})") from None
    partitioning = dataset.partitioning
    partition_columns = list(partitioning.schema.names) if partitioning is not None else []
    files = [DataFile(where.uri(i.path), i.size or 0, f.num_rows) for i, f in zip(infos, footers)]
    return _summed(files, "parquet", _columns(dataset.schema), volume=None, partition_columns=partition_columns)


def _is_data_file(root: str, path: str) -> bool:
    """A `*.parquet` file whose path below the root has no hidden or underscore-prefixed part (`_SUCCESS`, `.tmp-…`, `_temporary/`)."""
    parts = posixpath.relpath(path, root).split("/")
    return parts[-1].endswith(".parquet") and not any(part.startswith(("_", ".")) for part in parts)


def _footer(where: _Location, path: str) -> pq.FileMetaData:
    """A Parquet file's footer (schema and row count), read without touching its data pages."""
    try:
        return pq.read_metadata(path, filesystem=where.fs)
    except (pa.ArrowException, OSError) as exc:
        raise Invalid(f"{where.uri(path)} is not a readable Parquet file ({_first_line(exc)})") from None


def _require_same_schema(where: _Location, first_path: str, first: pa.Schema, path: str, schema: pa.Schema) -> None:
    a = {c.name: c.type for c in _columns(first)}
    b = {c.name: c.type for c in _columns(schema)}
    for name in [*a, *(n for n in b if n not in a)]:
        if a.get(name) != b.get(name):
            raise Invalid(
                f"{where.uri(path)} and {where.uri(first_path)} disagree on column '{name}' ({b.get(name, 'absent')} vs {a.get(name, 'absent')})"
            )


# Delta ----------------------------------------------------------------------------------
def _detect_delta(where: _Location) -> Detected:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(where.path if where.local else where.location, storage_options=_delta_storage_options(where))
        columns = _columns(pa.schema(table.schema().to_arrow()))
        actions = pa.table(table.get_add_actions(flatten=True)).select(["path", "size_bytes", "num_records"]).to_pylist()
        partition_columns = list(table.metadata().partition_columns)
    except TableNotFoundError:
        raise Invalid(f"{where.location} is not a Delta table (it has no readable `_delta_log`)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise Invalid(f"{where.location} cannot be read as a Delta table ({_first_line(exc)})") from None
    files = [DataFile(_delta_file_uri(where, a["path"]), a["size_bytes"], a["num_records"]) for a in actions]
    return _summed(files, "delta", columns, volume=None, partition_columns=partition_columns)


def _delta_file_uri(where: _Location, path: str) -> str:
    """An add action's path (URL-encoded, relative to the table root or an absolute URI) as a full URI."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return f"file://{unquote(parsed.path)}"
    if parsed.scheme:
        return unquote(path)
    return where.uri(f"{where.path}/{unquote(path)}")


def _delta_storage_options(where: _Location) -> dict[str, str] | None:
    """Options for deltalake's object store: none for local tables or real GCS (default credentials)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if where.local or not emulator:
        return None
    # object_store (deltalake's storage layer) has no endpoint option for GCS; its service-account key takes
    # `gcs_base_url` and `disable_oauth`, the fields it uses against fake-gcs-server itself. fake-gcs-server answers
    # its XML API only for its public host (storage.googleapis.com unless started with -public-host), so requests
    # name that host over plain HTTP and reach the emulator as their proxy.
    key = {"gcs_base_url": "http://storage.googleapis.com", "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
    proxy = emulator if "://" in emulator else f"http://{emulator}"
    return {"google_service_account_key": json.dumps(key), "allow_http": "true", "proxy_url": proxy}


# neuroglancer precomputed ---------------------------------------------------------------
def _detect_volume(where: _Location) -> Detected:
    info_path = f"{where.path}/info"
    info_uri = where.uri(info_path)
    try:
        with where.fs.open_input_stream(info_path) as stream:
            raw = stream.read()
        size = where.fs.get_file_info(info_path).size or len(raw)
    except FileNotFoundError:
        raise Invalid(f"{where.location} has no neuroglancer `info` file") from None
    except OSError as exc:
        raise Invalid(f"{info_uri} cannot be read ({_first_line(exc)})") from None
    if raw[:2] == b"\x1f\x8b":  # info files are often uploaded gzip-compressed
        raw = gzip.decompress(raw)
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise Invalid(f"{info_uri} is not valid JSON ({_first_line(exc)})") from None
    volume = _volume(info_uri, info)

    files = [DataFile(info_uri, size, None)]
    for key in dict.fromkeys(scale["key"].strip("/") for scale in volume["scales"]):
        files += [DataFile(where.uri(i.path), i.size or 0, None) for i in where.files_under(f"{where.path}/{key}")]
    return _summed(files, "neuroglancer_precomputed", None, volume=volume, partition_columns=[])


def _volume(info_uri: str, info: Any) -> dict:
    """The volume description of a parsed `info` file."""
    if not isinstance(info, dict):
        raise Invalid(f"{info_uri} is not a neuroglancer info file (its JSON is not an object)")
    if "data_type" not in info:
        raise Invalid(f"{info_uri} has no `data_type`, so it is not a neuroglancer volume's info file")
    scales = info.get("scales")
    if not isinstance(scales, list) or not scales:
        raise Invalid(f"{info_uri} has no `scales`, so it is not a neuroglancer volume's info file")
    described = []
    for number, scale in enumerate(scales):
        missing = [k for k in ("key", "size", "resolution") if not isinstance(scale, dict) or k not in scale]
        if missing or not isinstance(scale["key"], str):
            raise Invalid(f"{info_uri} scale {number} has no valid {', '.join(f'`{k}`' for k in missing or ['key'])}")
        described.append(
            {
                "key": scale["key"],
                "size": scale["size"],
                "resolution": scale["resolution"],
                "voxel_offset": scale.get("voxel_offset"),
                "chunk_sizes": scale.get("chunk_sizes"),
                "encoding": scale.get("encoding"),
                "sharding": scale.get("sharding"),
            }
        )
    return {"type": info.get("type"), "data_type": info["data_type"], "num_channels": info.get("num_channels"), "scales": described}


# formats without a reader here ----------------------------------------------------------
def _undetected(where: _Location, fmt: str) -> Detected:
    module = _READERS[fmt]
    reason = f"no {module} reader installed" if importlib.util.find_spec(module) is None else f"reading {fmt} with {module} is not implemented"
    note = f"format {fmt} is not supported for detection here ({reason}); the declared schema is recorded as declared"
    files = [DataFile(where.uri(i.path), i.size or 0, None) for i in where.files_under(where.path)]
    return _summed(files, fmt, None, volume=None, partition_columns=[], note=note)
