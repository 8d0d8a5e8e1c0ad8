"""Atomic table uploads (runbook: a table upload is atomic at table level).

Rows go to a private staging table in large batches, the staged count is verified, and the
dataset's partition is swapped in with ONE `REPLACE PARTITION`. Only then is
`dataset_table_state` written as `uploaded` with the whole table's row count. A failure at any
point leaves the previous good rows in place and the state `failed` with the error.

The upload holds a claim on the table (`MetadataStore.begin_upload`: owner, lease) renewed by a
heartbeat thread while it runs. A process killed mid-upload runs no handler: its state row is
settled as interrupted by the next reader, and the staging tables it left are dropped by the next
upload of the same dataset and table (`drop_leftover_staging`).

Retries: a whole upload attempt is retried after a transient ClickHouse or object-store error when
the rows can be read again from the start (a list or tuple of batches, or a callable returning a
fresh iterable). Each attempt stages into a new private table and the swap is one statement, so a
retried attempt can neither duplicate nor lose rows. A one-shot iterator is never retried: its
consumed batches cannot be sent again, and retrying the rest would upload a partial table.
Individual inserts are never retried on their own (a timed-out insert may have landed).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from connectome_assets.metadata.store import LEASE_RENEW_SECONDS, MetadataStore, UploadClaim
from connectome_assets.retrying import RetryPolicy, is_transient_clickhouse_error, is_transient_gcs_error, retry_call
from connectome_assets.warehouse.schema import check_identifier

_log = logging.getLogger(__name__)

# Runbook: never small batches; at least 64 Ki rows, and 1 Mi rows inserts ~2x faster in chDB.
MIN_INSERT_ROWS = 1 << 16
DEFAULT_INSERT_ROWS = 1 << 20


STAGING_PREFIX = "_staging_"
# A whole attempt can take an hour at male-CNS scale: few attempts, a long total bound.
UPLOAD_RETRY = RetryPolicy(attempts=3, first_delay=5.0, max_delay=120.0, total_seconds=6 * 3600)

Chunks = Iterable[pa.RecordBatch | pa.Table]


class UploadVerificationError(RuntimeError):
    pass


@dataclass(frozen=True)
class UploadResult:
    table: str
    rows: int
    inserts: int
    seconds: float


def dataset_id_column(dataset_id: uuid.UUID, rows: int) -> pa.Array:
    """A constant UUID column as FixedSizeBinary(16) (insert_arrow keeps its byte order)."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), rows, [None, pa.py_buffer(dataset_id.bytes * rows)])


def rebatch(chunks: Iterable[pa.RecordBatch | pa.Table], rows: int) -> Iterator[pa.Table]:
    """Group small batches into tables of at least `rows` rows (the last may be smaller)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for chunk in chunks:
        batches = chunk.to_batches() if isinstance(chunk, pa.Table) else [chunk]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            count += batch.num_rows
            if count >= rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def dataset_row_count(client: Client, database: str, table: str, dataset_id: uuid.UUID) -> int:
    db, name = check_identifier(database), check_identifier(table)
    return int(client.command(f"SELECT count() FROM {db}.{name} WHERE dataset_id = {{ds:UUID}}", parameters={"ds": str(dataset_id)}))


def replace_dataset_rows(
    client: Client,
    database: str,
    table: str,
    dataset_id: uuid.UUID,
    chunks: Iterable[pa.RecordBatch | pa.Table],
    insert_rows: int = DEFAULT_INSERT_ROWS,
) -> UploadResult:
    """Stage, verify, and swap in the dataset's rows of `table`; returns what was written."""
    if insert_rows < MIN_INSERT_ROWS:
        raise ValueError(f"insert_rows must be at least {MIN_INSERT_ROWS}")
    db, name = check_identifier(database), check_identifier(table)
    started = time.perf_counter()
    staging = f"{db}.{staging_prefix(name, dataset_id)}{secrets.token_hex(4)}"
    client.command(f"CREATE TABLE {staging} AS {db}.{name}")
    succeeded = False
    try:
        written = inserts = 0
        for part in rebatch(chunks, insert_rows):
            part = part.add_column(0, "dataset_id", dataset_id_column(dataset_id, part.num_rows))
            client.insert_arrow(staging, part)
            written += part.num_rows
            inserts += 1
        staged = int(client.command(f"SELECT count() FROM {staging}"))
        if staged != written:
            raise UploadVerificationError(f"{db}.{name}: staged {staged} rows but sent {written}; nothing was swapped in")
        client.command(
            f"ALTER TABLE {db}.{name} REPLACE PARTITION tuple(toUUID('{dataset_id}')) FROM {staging} "
            "SETTINGS allow_replace_partition_from_empty_source = 1"
        )
        landed = dataset_row_count(client, db, name, dataset_id)
        if landed != written:
            raise UploadVerificationError(f"{db}.{name}: {landed} rows after the swap, expected {written}")
        succeeded = True
        return UploadResult(table=name, rows=written, inserts=inserts, seconds=time.perf_counter() - started)
    finally:
        try:
            client.command(f"DROP TABLE IF EXISTS {staging}")
        except Exception:
            if succeeded:
                raise
            # The upload's own error is the one to report; the next upload drops this leftover.
            _log.warning("could not drop %s after a failed upload; the next upload of the table drops it", staging, exc_info=True)


def staging_prefix(table: str, dataset_id: uuid.UUID) -> str:
    """The name prefix of every staging table of one dataset's rows of `table`."""
    return f"{STAGING_PREFIX}{table}_{dataset_id.hex}_"


def drop_leftover_staging(client: Client, database: str, table: str, dataset_id: uuid.UUID) -> list[str]:
    """Drop staging tables an interrupted upload of this dataset's `table` left behind; returns their names.

    Call only while holding the table's upload claim: then no other upload of it is staging.
    """
    db = check_identifier(database)
    names = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String}) ORDER BY name",
        parameters={"db": db, "prefix": staging_prefix(check_identifier(table), dataset_id)},
    ).result_rows
    for (name,) in names:
        client.command(f"DROP TABLE IF EXISTS {db}.{check_identifier(name)}")
    return [name for (name,) in names]


def is_transient_upload_error(exc: BaseException) -> bool:
    """An upload attempt reads its rows (possibly from the object store) and writes ClickHouse."""
    return is_transient_clickhouse_error(exc) or is_transient_gcs_error(exc)


class LeaseHeartbeat:
    """Renews an upload claim's lease from a daemon thread while the upload runs."""

    def __init__(self, state: MetadataStore, claim: UploadClaim, every_seconds: float = LEASE_RENEW_SECONDS) -> None:
        self.state, self.claim, self.every_seconds = state, claim, every_seconds
        self.renewals = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {claim.table_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                held = self.state.renew_lease(self.claim)
            except Exception:  # a metadata hiccup: the lease has minutes left, try again next beat
                _log.warning("could not renew the upload lease of %s", self.claim.table_id, exc_info=True)
                continue
            if not held:
                self.lost = True  # finish_upload will refuse to record this upload's result
                return
            self.renewals += 1

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def upload_table_atomically(
    client: Client,
    database: str,
    table: str,
    dataset_id: uuid.UUID,
    chunks: Chunks | Callable[[], Chunks],
    state: MetadataStore,
    insert_rows: int = DEFAULT_INSERT_ROWS,
    *,
    report: Callable[[str], Any] = _log.warning,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    summary: Callable[[], Mapping[str, Any]] | None = None,
) -> UploadResult:
    """The one upload path: claim the table (`uploading`), replace rows, then `uploaded` or `failed`.

    `chunks` that can be read again (a list, a tuple, or a callable returning a fresh iterable) make
    the whole attempt retryable after a transient error; a one-shot iterator gets one attempt.
    `summary`, asked once the rows are in, is recorded with the row count (what was read and dropped).
    """
    claim = state.begin_upload(dataset_id, table)
    if claim.superseded:
        report(f"{database}.{table}: {claim.superseded}; this upload takes over")
    restartable = callable(chunks) or isinstance(chunks, (list, tuple))

    def attempt() -> UploadResult:
        source = chunks() if callable(chunks) else chunks
        return replace_dataset_rows(client, database, table, dataset_id, source, insert_rows)

    try:
        with LeaseHeartbeat(state, claim):
            dropped = drop_leftover_staging(client, database, table, dataset_id)
            if dropped:
                report(f"{database}.{table}: dropped {len(dropped)} staging table(s) left by an interrupted upload: {', '.join(dropped)}")
            if restartable:
                what = f"upload of {database}.{table} for dataset {dataset_id}"
                result = retry_call(attempt, what=what, transient=is_transient_upload_error, report=report, policy=retry or UPLOAD_RETRY, sleep=sleep)
            else:
                result = attempt()
    except BaseException as exc:  # interrupted uploads must leave a truthful state too
        state.fail_upload(dataset_id, table, f"{type(exc).__name__}: {exc}", upload_id=claim.upload_id)
        raise
    state.finish_upload(dataset_id, table, result.rows, upload_id=claim.upload_id, summary=summary() if summary else None)
    return result
