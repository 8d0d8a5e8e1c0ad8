"""Parquet exports of a dataset's tables to the object store (`file://…` or `gs://…`).

Layout: `<object_store>/exports/<dataset>/<version>/<table>.parquet` plus `manifest.json`, where
`version` is the graph source version (the upload stamps of `neurons` and `synapses`): a re-import
gets a new path, and exporting the same rows again rewrites the same objects with the same bytes
(rows are read in the table's sorting-key order). Each file is written under a temporary name and
moved into place, and the manifest is written last, so a manifest only ever names complete files.
Rows stream from ClickHouse as Arrow batches; at most one row group is held in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.catalog import NAME_PATTERN
from connectome_assets.connectome.files import filesystem_for
from connectome_assets.graph.status import PRODUCTS, graph_source_version, latest_status, product_problem
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.progress import Progress, discard
from connectome_assets.retrying import retry_call
from connectome_assets.warehouse.client import arrow_batches
from connectome_assets.warehouse.schema import check_identifier
from connectome_assets.warehouse.scoped_tables import dataset_tables
from connectome_assets.warehouse.upload import dataset_row_count, is_transient_upload_error, rebatch

# Rows per Parquet row group, and so the most rows held in memory while a table streams.
ROW_GROUP_ROWS = 1 << 18
MANIFEST = "manifest.json"
STATUS_TABLE = "precomputed_analysis_status"


class ExportError(RuntimeError):
    """A product cannot be exported as deployed; the message says which and what to re-materialize."""


# Reading a dataset's rows ----------------------------------------------------------------
def open_dataset_rows(
    client: Client, database: str, table: str, dataset_id: uuid.UUID, *, final: bool = False
) -> tuple[pa.Schema, AbstractContextManager[Iterator[pa.RecordBatch]]]:
    """The schema and a stream of Arrow batches of the dataset's rows of `table`, in sorting-key order.

    Enter the stream in a `with` block and issue no other query until it is consumed: chDB holds its
    connection for an open stream. `final` reads ReplacingMergeTree tables as merged (newest row per key).
    """
    db, name = check_identifier(database), check_identifier(table)
    sorting_key = client.query(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {name:String}", parameters={"db": db, "name": name}
    ).result_rows
    # The empty result still carries the column types, so an empty table exports with its schema.
    schema = client.query_arrow(f"SELECT * FROM {db}.{name} LIMIT 0").schema
    order = f" ORDER BY {sorting_key[0][0]}" if sorting_key and sorting_key[0][0] else ""
    stream = arrow_batches(client, f"SELECT * FROM {db}.{name}{' FINAL' if final else ''} WHERE dataset_id = {{ds:UUID}}{order}", {"ds": str(dataset_id)})
    return schema, stream


def write_parquet(
    fs: pafs.FileSystem, path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], progress: Progress | None = None
) -> tuple[int, int]:
    """Stream batches into one Parquet file at `path`; returns (rows, bytes). Each row group
    written advances `progress` by its rows, and the finished file by one step.

    Written under a temporary name and moved into place: a local rename is atomic, and on GCS a
    stream that fails half-way is still finalized as an object, which must never carry the real name.
    """
    parent = path.rsplit("/", 1)[0]
    temporary = f"{parent}/.tmp-{secrets.token_hex(6)}-{path.rsplit('/', 1)[1]}"
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
    rows = 0
    try:
        with fs.open_output_stream(temporary) as sink, pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for part in rebatch(batches, ROW_GROUP_ROWS):
                if not part.schema.equals(schema):
                    part = part.cast(schema)
                writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
                rows += part.num_rows
                if progress is not None:
                    progress.advance(part.num_rows, steps=0)
        fs.move(temporary, path)
        if progress is not None:
            progress.advance(0, steps=1)
    except BaseException:
        _delete_quietly(fs, temporary)
        raise
    return rows, fs.get_file_info(path).size or 0


def parquet_row_count(fs: pafs.FileSystem, path: str) -> int:
    """The row count in the file's footer (a ranged read of the footer, not the data)."""
    with fs.open_input_file(path) as source:
        return pq.ParquetFile(source).metadata.num_rows


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass  # never written, or already gone: nothing to clean


def _write_json(fs: pafs.FileSystem, path: str, document: dict[str, Any]) -> None:
    temporary = f"{path}.tmp-{secrets.token_hex(6)}"
    try:
        with fs.open_output_stream(temporary) as sink:
            sink.write(json.dumps(document, indent=2, sort_keys=True).encode())
        fs.move(temporary, path)
    except BaseException:
        _delete_quietly(fs, temporary)
        raise


# Exports ---------------------------------------------------------------------------------
def export_root(object_store: str, dataset: str, version: str) -> str:
    """The URI of a dataset's export folder for one graph source version."""
    if not NAME_PATTERN.match(dataset):
        raise ValueError(f"dataset name {dataset!r} cannot be used in an export path")
    return f"{object_store.rstrip('/')}/exports/{dataset}/{version}"


@dataclass(frozen=True)
class ExportedTable:
    table: str
    uri: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class ExportResult:
    dataset: str
    dataset_id: uuid.UUID
    version: str
    root: str
    manifest_uri: str
    tables: list[ExportedTable] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)  # Progress.finish(): rows, tables, seconds, rows_per_second


def export_dataset(
    client: Client, database: str, store: MetadataStore, object_store: str, dataset: str, report: Callable[[str], Any] = discard
) -> ExportResult:
    """Export `neurons`, `synapses` and every dataset-scoped product table of the dataset, then the manifest."""
    dataset_id = store.dataset_id(dataset)
    version = graph_source_version(store, dataset_id)
    root = export_root(object_store, dataset, version)
    fs, base = filesystem_for(root)
    tables = dataset_tables(client, database)
    # Products are exported only as the blocking check would accept them: current, whole, and
    # empty only when expected. A stale product must not appear under the new version's path.
    products, problems = {}, []
    counts = {table: dataset_row_count(client, database, table, dataset_id) for table in tables}
    for table in tables:
        if table in PRODUCTS:
            status = latest_status(client, database, dataset_id, PRODUCTS[table].name)
            problem = product_problem(table, dataset, counts[table], status, version)
            if problem:
                problems.append(problem)
            products[table] = None if status is None else {"status": status.status, "source_data_version": status.source_data_version}
    if problems:
        raise ExportError("; ".join(problems) + "; nothing was exported")
    exported = []
    progress = Progress(f"{dataset} exports", report, total=sum(counts.values()), step="tables", steps_total=len(tables))
    for table in tables:
        counted_before = progress.amount

        def export_table(table: str = table, counted_before: int = counted_before) -> tuple[int, int]:
            progress.amount = counted_before  # a retried table counts its rows once
            schema, stream = open_dataset_rows(client, database, table, dataset_id)
            with stream as batches:
                return write_parquet(fs, f"{base}/{table}.parquet", schema, batches, progress)

        # Safe to retry whole: the file is written under a temporary name and moved into place.
        rows, size = retry_call(export_table, what=f"export of {dataset}.{table}", transient=is_transient_upload_error, report=report)
        exported.append(ExportedTable(table=table, uri=f"{root}/{table}.parquet", rows=rows, bytes=size))
    manifest = {
        "dataset": dataset,
        "dataset_id": str(dataset_id),
        "version": version,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "tables": {t.table: {"file": f"{t.table}.parquet", "rows": t.rows, "bytes": t.bytes} for t in exported},
        "products": products,
    }
    _write_json(fs, f"{base}/{MANIFEST}", manifest)
    return ExportResult(dataset, dataset_id, version, root, f"{root}/{MANIFEST}", exported, progress.finish())


def load_manifest(root: str) -> dict[str, Any]:
    """The `manifest.json` of an export folder."""
    fs, base = filesystem_for(root)
    with fs.open_input_stream(f"{base}/{MANIFEST}") as source:
        return json.loads(source.read())


@dataclass(frozen=True)
class TableCount:
    table: str
    clickhouse_rows: int | None  # None: the table is no longer in ClickHouse
    manifest_rows: int | None  # None: the manifest does not list it
    parquet_rows: int | None  # None: the file is missing

    @property
    def ok(self) -> bool:
        return self.parquet_rows is not None and self.parquet_rows == self.clickhouse_rows == self.manifest_rows


@dataclass(frozen=True)
class ExportVerification:
    dataset: str
    version: str
    root: str
    counts: list[TableCount]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_export(client: Client, database: str, store: MetadataStore, object_store: str, dataset: str) -> ExportVerification:
    """Compare, per table, the Parquet footer row count of the current version's export with the ClickHouse count."""
    dataset_id = store.dataset_id(dataset)
    version = graph_source_version(store, dataset_id)
    root = export_root(object_store, dataset, version)
    fs, base = filesystem_for(root)
    manifest_path = f"{base}/{MANIFEST}"
    if fs.get_file_info(manifest_path).type != pafs.FileType.File:
        problem = f"dataset {dataset} has no export of source version {version} (no {root}/{MANIFEST}); materialize `feature_exports`"
        return ExportVerification(dataset, version, root, [], [problem])
    listed = load_manifest(root)["tables"]
    in_clickhouse = dataset_tables(client, database)
    counts, problems = [], []
    for table in [*in_clickhouse, *sorted(set(listed) - set(in_clickhouse))]:
        clickhouse_rows = dataset_row_count(client, database, table, dataset_id) if table in in_clickhouse else None
        manifest_rows = listed[table]["rows"] if table in listed else None
        path = f"{base}/{listed.get(table, {}).get('file', f'{table}.parquet')}"
        parquet_rows = parquet_row_count(fs, path) if fs.get_file_info(path).type == pafs.FileType.File else None
        count = TableCount(table, clickhouse_rows, manifest_rows, parquet_rows)
        counts.append(count)
        if count.ok:
            continue
        if parquet_rows is None:
            problems.append(f"`{table}` has no export file at {root}/{table}.parquet")
        elif clickhouse_rows is None:
            problems.append(f"`{table}` is exported ({parquet_rows} rows) but no longer a dataset table in ClickHouse")
        else:
            problems.append(f"`{table}` export has {parquet_rows} rows (manifest {manifest_rows}), ClickHouse has {clickhouse_rows}")
    return ExportVerification(dataset, version, root, counts, problems)
