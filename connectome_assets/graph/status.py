"""`precomputed_analysis_status`: one row per (dataset, product) saying what the product holds.

Runbook: "Empty graph products are valid only when the source graph is truly empty or the
product is explicitly not applicable", and "derived products must be regenerated from the same
canonical source rows". So every status row records the source version it was computed from
(the upload stamps of the dataset's `neurons` and `synapses`, see `graph_source_version`); a
re-import changes that version and the product is stale until it is recomputed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.schema import check_identifier

STATUSES = ("ok", "empty_graph", "not_applicable", "failed")
# A product may be empty only with one of these statuses (and a graph with no edges).
EMPTY_EXPECTED = frozenset({"empty_graph", "not_applicable"})
BACKENDS = ("in_memory_small", "streaming_topology")


@dataclass(frozen=True)
class Product:
    name: str  # the product, as precomputed_analysis_status.product names it
    table: str  # the ClickHouse table holding its rows
    asset: str  # the Dagster asset that regenerates it


BOTTLENECK_NEURONS = Product("bottleneck_neurons", "precomputed_bottleneck_neurons", "bottleneck_neurons")
PRODUCTS = {product.table: product for product in (BOTTLENECK_NEURONS,)}


@dataclass(frozen=True)
class AnalysisStatus:
    dataset_id: uuid.UUID
    product: str
    status: str
    backend: str
    row_count: int
    exact: bool
    params: dict[str, Any]
    source_data_version: str
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"analysis status {self.status!r} is not one of {STATUSES}")


class SourceNotUploadedError(RuntimeError):
    pass


def graph_source_version(store: MetadataStore, dataset_id: uuid.UUID) -> str:
    """The identity of the canonical rows products are computed from: a digest of the upload
    stamps (time and row count) of the dataset's `neurons` and `synapses`. Any re-import changes it."""
    parts = []
    for table in ("neurons", "synapses"):
        state = store.table_state(dataset_id, table)
        if state is None or state.upload_state != "uploaded" or state.uploaded_at is None:
            shown = "never uploaded" if state is None else f"'{state.upload_state}'"
            raise SourceNotUploadedError(f"dataset {dataset_id}: `{table}` is {shown}; materialize it before its graph products")
        parts.append(f"{table}@{state.uploaded_at.isoformat()}#{state.row_count}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


def record_status(client: Client, database: str, status: AnalysisStatus) -> None:
    """Insert the status row; ReplacingMergeTree keeps the newest per (dataset, product)."""
    db = check_identifier(database)
    client.insert(
        f"{db}.precomputed_analysis_status",
        [[
            status.dataset_id,
            status.product,
            status.status,
            status.backend,
            status.row_count,
            status.exact,
            json.dumps(status.params, sort_keys=True),
            status.source_data_version,
            status.computed_at,
            status.message[:4000],
        ]],
        column_names=["dataset_id", "product", "status", "backend", "row_count", "exact", "params", "source_data_version", "computed_at", "message"],
    )


def latest_status(client: Client, database: str, dataset_id: uuid.UUID, product: str) -> AnalysisStatus | None:
    """The newest status row of the product for the dataset, or None if it was never computed."""
    db = check_identifier(database)
    rows = client.query(
        f"""SELECT product, status, backend, row_count, exact, params, source_data_version, computed_at, message
            FROM {db}.precomputed_analysis_status
            WHERE dataset_id = {{ds:UUID}} AND product = {{product:String}}
            ORDER BY computed_at DESC LIMIT 1""",
        parameters={"ds": str(dataset_id), "product": product},
    ).result_rows
    if not rows:
        return None
    name, status, backend, row_count, exact, params, version, computed_at, message = rows[0]
    if computed_at.tzinfo is None:
        computed_at = computed_at.replace(tzinfo=dt.timezone.utc)
    return AnalysisStatus(dataset_id, name, status, backend, int(row_count), bool(exact), json.loads(params), version, computed_at, message)


def remedy(table: str) -> str:
    """What a person does to regenerate a product table."""
    product = PRODUCTS.get(table)
    return f"re-materialize `{product.asset}`" if product else f"regenerate `{table}`"


def product_problem(table: str, dataset: str, rows: int, status: AnalysisStatus | None, version: str) -> str | None:
    """Why the deployed rows of a product table cannot be trusted, or None when they can: the one rule
    the blocking check, the exports and the article cache all apply (runbook: an empty or missing
    product is a symptom unless its status says empty is expected)."""
    fix = remedy(table)
    if status is None:
        if table in PRODUCTS:
            held = "is empty" if rows == 0 else f"has {rows} rows"
            return f"`{table}` {held} for dataset {dataset} but has no analysis status; {fix}"
        # Tables outside PRODUCTS (e.g. materialized views) need no status (one whose product is the table
        # name is honoured); an empty one is still a missing product.
        return f"`{table}` is empty for dataset {dataset}; {fix}" if rows == 0 else None
    if status.status == "failed":
        detail = f" ({status.message})" if status.message else ""
        return f"`{table}` failed for dataset {dataset}{detail}; fix the cause and {fix}"
    if status.source_data_version != version:
        return (
            f"`{table}` for dataset {dataset} was computed from source version {status.source_data_version}, "
            f"but neurons/synapses are now version {version} (stale); {fix}"
        )
    if rows == 0 and status.status not in EMPTY_EXPECTED:
        return f"`{table}` is empty for dataset {dataset} although its analysis status is '{status.status}'; {fix}"
    if rows and status.status != "ok":
        return f"`{table}` has {rows} rows for dataset {dataset} although its analysis status is '{status.status}'; {fix}"
    if rows != status.row_count:
        return f"`{table}` has {rows} rows for dataset {dataset} but its analysis status recorded {status.row_count}; {fix}"
    return None
