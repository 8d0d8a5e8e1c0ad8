"""The metadata store: datasets and `dataset_table_state`, on SQLite or PostgreSQL.

Upload state transitions (runbook: the state must describe the WHOLE uploaded table):
    pending/uploaded/failed --begin--> uploading --succeed(row_count)--> uploaded
                                                 --fail(error)--------> failed
                                                 --owner gone or lease expired--> failed ("interrupted: …")
`failed` and `uploading` keep the row_count and uploaded_at of the rows still in the warehouse
(the previous good upload), so the state never claims rows that are not there.

An upload is owned: `begin_upload` records an upload id, the owning process (`ownership`) and a
lease that the owner's heartbeat renews. A process killed with SIGKILL runs no handler, so its
row would say `uploading` forever; instead every reader (`table_state`, and `begin_upload`)
settles an `uploading` row whose process is gone (same host) or whose lease has expired as
`failed` with "interrupted" in the error. A live upload is never displaced: a second
`begin_upload` of the same table is refused with `UploadInProgressError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session, sessionmaker

from connectome_assets.metadata.models import Dataset, DatasetTableState
from connectome_assets.metadata.ownership import Liveness, UploadOwner

MIGRATIONS = Path(__file__).parent / "migrations"
UPLOAD_STATES = ("pending", "uploading", "uploaded", "failed")
# How long an upload's claim lasts without a heartbeat; the owner renews it every LEASE_RENEW_SECONDS.
# A killed process on another host (another pod) is recognised once its lease has run out.
LEASE_SECONDS = 300
LEASE_RENEW_SECONDS = 30


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _engine_url(url: str) -> str:
    # Our own code uses psycopg 3; a bare postgresql:// already means that in SQLAlchemy 2.1.
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    if url.startswith("postgresql+psycopg2://"):
        return "postgresql+psycopg://" + url[len("postgresql+psycopg2://") :]
    return url


@dataclass(frozen=True)
class TableState:
    dataset_id: uuid.UUID
    table_id: str
    upload_state: str
    row_count: int | None
    uploaded_at: dt.datetime | None
    error_message: str | None
    upload_id: str | None = None
    upload_owner: str | None = None
    upload_started_at: dt.datetime | None = None
    lease_expires_at: dt.datetime | None = None
    summary: dict[str, Any] | None = None  # what the upload holding the rows read and dropped


@dataclass(frozen=True)
class UploadClaim:
    """The right to upload one table of one dataset, held until finish/fail or the lease runs out."""

    dataset_id: uuid.UUID
    table_id: str
    upload_id: str
    owner: str
    superseded: str | None  # the "interrupted: …" account of an abandoned upload this one replaced


class UnknownDatasetError(LookupError):
    pass


class UploadInProgressError(RuntimeError):
    """Another live upload holds the table: a second upload must not race it."""


class UploadOwnershipLostError(RuntimeError):
    """The upload's claim was taken over (its lease had run out) before it could record its result."""


class MetadataStore:
    def __init__(self, url: str, clock: Callable[[], dt.datetime] = _now) -> None:
        self.clock = clock  # injectable so lease expiry is tested without waiting
        self.url = _engine_url(url)
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()

    def _session(self) -> Session:
        return self._sessions()

    # datasets ---------------------------------------------------------------------------
    def ensure_dataset(self, name: str, source_model: str, description: str = "") -> uuid.UUID:
        """The dataset's id, creating the row the first time a name is seen."""
        with self._session() as session, session.begin():
            found = session.scalar(sa.select(Dataset).where(Dataset.name == name))
            if found is not None:
                found.source_model = source_model
                found.description = description
                return found.id
            dataset = Dataset(id=uuid.uuid4(), name=name, source_model=source_model, description=description, created_at=self.clock())
            session.add(dataset)
            return dataset.id

    def dataset_id(self, name: str) -> uuid.UUID:
        with self._session() as session:
            found = session.scalar(sa.select(Dataset.id).where(Dataset.name == name))
        if found is None:
            raise UnknownDatasetError(f"dataset {name!r} is not registered in the metadata database")
        return found

    def dataset_names(self) -> list[str]:
        with self._session() as session:
            return list(session.scalars(sa.select(Dataset.name).order_by(Dataset.name)))

    # upload state -----------------------------------------------------------------------
    def table_state(self, dataset_id: uuid.UUID, table_id: str) -> TableState | None:
        """The table's state; an `uploading` row whose upload is gone is settled as interrupted first."""
        with self._session() as session:
            row = session.get(DatasetTableState, (dataset_id, table_id))
            if row is None:
                return None
            if self._abandonment(row) is None:
                return _state(row)
        with self._session() as session, session.begin():
            row = session.get(DatasetTableState, (dataset_id, table_id), with_for_update=True)
            self._settle_if_abandoned(row)
            return _state(row)

    def table_states(self, dataset_id: uuid.UUID) -> list[TableState]:
        """Every table's state for the dataset (settled like `table_state`), by table name."""
        with self._session() as session:
            tables = list(session.scalars(sa.select(DatasetTableState.table_id).where(DatasetTableState.dataset_id == dataset_id).order_by(DatasetTableState.table_id)))
        return [state for table in tables if (state := self.table_state(dataset_id, table)) is not None]

    def completed_uploads_fingerprint(self, name: str, tables: Iterable[str]) -> str:
        """When each of the dataset's `tables` last completed an upload, as a short digest: it changes
        exactly when one of them completes another (a failed or running upload changes nothing)."""
        with self._session() as session:
            completed = dict(
                session.execute(
                    sa.select(DatasetTableState.table_id, DatasetTableState.uploaded_at)
                    .join(Dataset, Dataset.id == DatasetTableState.dataset_id)
                    .where(Dataset.name == name)
                ).all()
            )
        marks = [f"{table}={_aware(completed[table]).isoformat() if completed.get(table) else '-'}" for table in tables]
        return hashlib.sha256(";".join(marks).encode()).hexdigest()[:16]

    def begin_upload(self, dataset_id: uuid.UUID, table_id: str, owner: UploadOwner | None = None) -> UploadClaim:
        """Claim the table for a new upload (state `uploading`); refused while another live upload holds it."""
        owner = owner or UploadOwner.current()
        now = self.clock()
        with self._session() as session, session.begin():
            row = session.get(DatasetTableState, (dataset_id, table_id), with_for_update=True)
            superseded = None
            if row is None:
                row = DatasetTableState(dataset_id=dataset_id, table_id=table_id, upload_state="uploading")
                session.add(row)
            elif row.upload_state == "uploading":
                superseded = self._abandonment(row)
                if superseded is None:
                    raise UploadInProgressError(
                        f"dataset {dataset_id} table {table_id!r} is being uploaded by {row.upload_owner} (upload {row.upload_id}, "
                        f"started {_aware(row.upload_started_at):%Y-%m-%d %H:%M:%S} UTC, lease until {_aware(row.lease_expires_at):%H:%M:%S} UTC); "
                        "a second upload is refused until it finishes, fails or its lease runs out"
                    )
            row.upload_state = "uploading"
            row.error_message = None
            row.upload_id = uuid.uuid4().hex
            row.upload_owner = str(owner)
            row.upload_started_at = now
            row.lease_expires_at = now + dt.timedelta(seconds=LEASE_SECONDS)
            return UploadClaim(dataset_id, table_id, row.upload_id, row.upload_owner, superseded)

    def renew_lease(self, claim: UploadClaim) -> bool:
        """Extend the claim's lease; False when the table is no longer held by this upload."""
        with self._session() as session, session.begin():
            renewed = session.execute(
                sa.update(DatasetTableState)
                .where(
                    DatasetTableState.dataset_id == claim.dataset_id,
                    DatasetTableState.table_id == claim.table_id,
                    DatasetTableState.upload_id == claim.upload_id,
                    DatasetTableState.upload_state == "uploading",
                )
                .values(lease_expires_at=self.clock() + dt.timedelta(seconds=LEASE_SECONDS))
            )
            return renewed.rowcount == 1

    def finish_upload(
        self, dataset_id: uuid.UUID, table_id: str, row_count: int, upload_id: str | None = None, summary: Mapping[str, Any] | None = None
    ) -> None:
        """The whole table is in the warehouse: record its full row count (and what the upload read
        and dropped, `summary`, JSON-serialisable).

        With `upload_id`, only that upload may record its result (`UploadOwnershipLostError` otherwise).
        """
        self._transition(
            dataset_id, table_id, "uploaded", error=None, row_count=row_count, uploaded_at=self.clock(), upload_id=upload_id, summary=summary
        )

    def fail_upload(self, dataset_id: uuid.UUID, table_id: str, error: str, upload_id: str | None = None) -> None:
        """Record the failure; with `upload_id`, a table taken over by another upload is left alone."""
        try:
            self._transition(dataset_id, table_id, "failed", error=error[:4000], upload_id=upload_id)
        except UploadOwnershipLostError:
            pass  # the new holder's state is the truthful one

    def _abandonment(self, row: DatasetTableState) -> str | None:
        """Why an `uploading` row's upload is no longer running, or None while it may be."""
        if row.upload_state != "uploading":
            return None
        owner = UploadOwner.parse(row.upload_owner)
        started = f"started {_aware(row.upload_started_at):%Y-%m-%d %H:%M:%S} UTC" if row.upload_started_at else "start unknown"
        who = f"upload {row.upload_id} by {row.upload_owner} ({started})"
        if owner is None or row.lease_expires_at is None:
            return "interrupted: an upload that recorded no owner or lease never finished"
        if owner.liveness() is Liveness.GONE:
            return f"interrupted: {who} stopped without finishing; its process is gone"
        if self.clock() >= _aware(row.lease_expires_at):
            return f"interrupted: {who} stopped renewing its lease, which expired at {_aware(row.lease_expires_at):%Y-%m-%d %H:%M:%S} UTC"
        return None

    def _settle_if_abandoned(self, row: DatasetTableState) -> None:
        reason = self._abandonment(row)
        if reason is not None:
            row.upload_state = "failed"
            row.error_message = f"{reason}; the warehouse keeps the rows the state counts, unless that upload's swap had completed (re-run the import)"

    def reset_table_state(self, dataset_id: uuid.UUID, table_ids: Iterable[str]) -> list[str]:
        """Mark tables whose rows were deleted for regeneration `pending`, with no rows.

        Only existing state rows change (no row is created); returns the reset table ids, sorted.
        """
        wanted = list(dict.fromkeys(table_ids))
        if not wanted:
            return []
        with self._session() as session, session.begin():
            rows = session.scalars(
                sa.select(DatasetTableState)
                .where(DatasetTableState.dataset_id == dataset_id, DatasetTableState.table_id.in_(wanted))
                .with_for_update()
            ).all()
            for row in rows:
                row.upload_state = "pending"
                row.row_count = None
                row.uploaded_at = None
                row.upload_summary = None
                row.error_message = None
            return sorted(row.table_id for row in rows)

    def _transition(self, dataset_id, table_id, state, error, row_count=None, uploaded_at=None, upload_id=None, summary=None) -> None:
        with self._session() as session, session.begin():
            row = session.get(DatasetTableState, (dataset_id, table_id), with_for_update=True)
            if upload_id is not None and (row is None or row.upload_id != upload_id):
                holder = "nobody" if row is None else f"upload {row.upload_id} by {row.upload_owner}"
                raise UploadOwnershipLostError(
                    f"dataset {dataset_id} table {table_id!r}: upload {upload_id} cannot record '{state}': the table is now held by {holder}"
                )
            if row is None:
                row = DatasetTableState(dataset_id=dataset_id, table_id=table_id, upload_state=state)
                session.add(row)
            row.upload_state = state
            row.error_message = error
            if uploaded_at is not None:
                row.row_count = row_count
                row.uploaded_at = uploaded_at
                row.upload_summary = dict(summary) if summary is not None else None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite drops the zone
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _state(row: DatasetTableState) -> TableState:
    return TableState(
        row.dataset_id,
        row.table_id,
        row.upload_state,
        row.row_count,
        _aware(row.uploaded_at),
        row.error_message,
        row.upload_id,
        row.upload_owner,
        _aware(row.upload_started_at),
        _aware(row.lease_expires_at),
        row.upload_summary,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
