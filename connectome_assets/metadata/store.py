"""The metadata store: datasets and `dataset_table_state`, on SQLite or PostgreSQL.

Upload state transitions (runbook: the state must describe the WHOLE uploaded table):
    pending/uploaded/failed --begin--> uploading --succeed(row_count)--> uploaded
                                                 --fail(error)--------> failed
`failed` and `uploading` keep the row_count and uploaded_at of the rows still in the warehouse
(the previous good upload), so the state never claims rows that are not there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session, sessionmaker

from connectome_assets.metadata.models import Dataset, DatasetTableState

MIGRATIONS = Path(__file__).parent / "migrations"
UPLOAD_STATES = ("pending", "uploading", "uploaded", "failed")


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


class UnknownDatasetError(LookupError):
    pass


class MetadataStore:
    def __init__(self, url: str) -> None:
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
            dataset = Dataset(id=uuid.uuid4(), name=name, source_model=source_model, description=description, created_at=_now())
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
        with self._session() as session:
            row = session.get(DatasetTableState, (dataset_id, table_id))
            return None if row is None else _state(row)

    def begin_upload(self, dataset_id: uuid.UUID, table_id: str) -> None:
        self._transition(dataset_id, table_id, "uploading", error=None)

    def finish_upload(self, dataset_id: uuid.UUID, table_id: str, row_count: int) -> None:
        """The whole table is in the warehouse: record its full row count."""
        self._transition(dataset_id, table_id, "uploaded", error=None, row_count=row_count, uploaded_at=_now())

    def fail_upload(self, dataset_id: uuid.UUID, table_id: str, error: str) -> None:
        self._transition(dataset_id, table_id, "failed", error=error[:4000])

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
                row.error_message = None
            return sorted(row.table_id for row in rows)

    def _transition(self, dataset_id, table_id, state, error, row_count=None, uploaded_at=None) -> None:
        with self._session() as session, session.begin():
            row = session.get(DatasetTableState, (dataset_id, table_id), with_for_update=True)
            if row is None:
                row = DatasetTableState(dataset_id=dataset_id, table_id=table_id, upload_state=state)
                session.add(row)
            row.upload_state = state
            row.error_message = error
            if uploaded_at is not None:
                row.row_count = row_count
                row.uploaded_at = uploaded_at


def _state(row: DatasetTableState) -> TableState:
    uploaded_at = row.uploaded_at
    if uploaded_at is not None and uploaded_at.tzinfo is None:  # SQLite drops the zone
        uploaded_at = uploaded_at.replace(tzinfo=dt.timezone.utc)
    return TableState(row.dataset_id, row.table_id, row.upload_state, row.row_count, uploaded_at, row.error_message)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
