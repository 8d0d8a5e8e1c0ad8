"""The article cache: a dataset's deployed derived products as local Parquet (runbook: "Cache Population").

`<out>/<dataset>/<table>.parquet` for every dataset-scoped `mv_*` / `precomputed_*` table and every
known product (`graph.status.PRODUCTS`), plus `precomputed_analysis_status.parquet` (the dataset's
status rows, merged) and `manifest.json`. The cache reflects the deployed products and nothing
else: rows are copied from ClickHouse as they are, never filled in. A product that is missing,
empty without a status saying empty is expected, failed, or computed from other source rows is
an error that names the table and the asset to re-materialize; nothing is written then, and the
previous cache stays as it was (the new one is built beside it and swapped in only when complete).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.catalog import NAME_PATTERN
from connectome_assets.graph.status import PRODUCTS, graph_source_version, latest_status, product_problem, remedy
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.progress import Progress, discard
from connectome_assets.warehouse.exports import STATUS_TABLE, open_dataset_rows, write_parquet
from connectome_assets.warehouse.schema import check_identifier
from connectome_assets.warehouse.scoped_tables import dataset_scoped_tables
from connectome_assets.warehouse.upload import dataset_row_count

MANIFEST = "manifest.json"


class ArticleCacheError(RuntimeError):
    """A product cannot be cached as deployed; the message says which and what to re-materialize."""


@dataclass(frozen=True)
class CachedTable:
    table: str
    rows: int
    bytes: int
    status: str | None  # the product's analysis status, when it has one


@dataclass(frozen=True)
class ArticleCacheResult:
    dataset: str
    dataset_id: uuid.UUID
    version: str
    directory: Path
    tables: list[CachedTable] = field(default_factory=list)
    status_rows: int = 0
    progress: dict[str, Any] = field(default_factory=dict)  # Progress.finish() of the products: rows, tables, seconds, rows_per_second


def cached_products(present: set[str]) -> list[str]:
    """The tables to cache: the discovered dataset-scoped products, and every known product even if it is missing."""
    return sorted((present - {STATUS_TABLE}) | set(PRODUCTS))


def populate_article_cache(
    client: Client, database: str, store: MetadataStore, dataset: str, out: Path, report: Callable[[str], Any] = discard
) -> ArticleCacheResult:
    """Download the dataset's derived products into `<out>/<dataset>/`, all or nothing.

    Raises UnknownDatasetError for an unregistered dataset, SourceNotUploadedError when its source
    rows are not uploaded, and ArticleCacheError naming every product that cannot be cached.
    """
    if not NAME_PATTERN.match(dataset):
        raise ValueError(f"dataset name {dataset!r} cannot be used as a cache folder")
    db = check_identifier(database)
    dataset_id = store.dataset_id(dataset)
    version = graph_source_version(store, dataset_id)
    present = set(dataset_scoped_tables(client, db))
    tables = cached_products(present)

    # Every product is judged before anything is downloaded, and every problem is reported at once.
    problems, counts, statuses = [], {}, {}
    for table in tables:
        if table not in present:
            problems.append(f"`{table}` does not exist as a dataset table in ClickHouse database {db}; {remedy(table)}")
            continue
        counts[table] = dataset_row_count(client, db, table, dataset_id)
        product = PRODUCTS[table].name if table in PRODUCTS else table
        statuses[table] = latest_status(client, db, dataset_id, product) if STATUS_TABLE in present else None
        problem = product_problem(table, dataset, counts[table], statuses[table], version)
        if problem:
            problems.append(problem)
    if problems:
        raise ArticleCacheError("; ".join(problems))

    out.mkdir(parents=True, exist_ok=True)
    # Built beside the final folder (same filesystem), so the swap is two renames.
    staging = out / f".{dataset}.staging-{secrets.token_hex(6)}"
    staging.mkdir()  # not mkdtemp: its 0700 mode would become the cache's after the swap
    local = pafs.LocalFileSystem()
    try:
        cached = []
        progress = Progress(f"{dataset} article cache", report, total=sum(counts.values()), step="tables", steps_total=len(tables))
        for table in tables:
            schema, stream = open_dataset_rows(client, db, table, dataset_id)
            with stream as batches:
                rows, size = write_parquet(local, str(staging / f"{table}.parquet"), schema, batches, progress)
            if rows != counts[table]:
                raise ArticleCacheError(
                    f"`{table}` changed while it was downloaded ({counts[table]} rows counted, {rows} read); populate the cache again"
                )
            status = statuses[table]
            cached.append(CachedTable(table, rows, size, status.status if status else None))
        status_rows = 0
        if STATUS_TABLE in present:
            schema, stream = open_dataset_rows(client, db, STATUS_TABLE, dataset_id, final=True)
            with stream as batches:
                status_rows, _ = write_parquet(local, str(staging / f"{STATUS_TABLE}.parquet"), schema, batches)
        manifest = {
            "dataset": dataset,
            "dataset_id": str(dataset_id),
            "version": version,
            "populated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "tables": {
                t.table: {
                    "file": f"{t.table}.parquet",
                    "rows": t.rows,
                    "bytes": t.bytes,
                    "status": t.status,
                    "source_data_version": statuses[t.table].source_data_version if statuses[t.table] else None,
                }
                for t in cached
            },
            "status_rows": status_rows,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        directory = out / dataset
        _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ArticleCacheResult(dataset, dataset_id, version, directory, cached, status_rows, progress.finish())


def _swap_in(staging: Path, directory: Path) -> None:
    """Replace `directory` by `staging`; if the second rename fails the previous cache is put back."""
    previous = None
    if directory.exists():
        previous = directory.with_name(f".{directory.name}.previous-{secrets.token_hex(4)}")
        directory.rename(previous)
    try:
        staging.rename(directory)
    except BaseException:
        if previous is not None:
            previous.rename(directory)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
