"""SQLAlchemy models of the metadata database. The schema is owned by the Alembic migrations."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True, nullable=False)
    source_model: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    description: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class DatasetTableState(Base):
    """What the warehouse holds for one table of one dataset (runbook: the WHOLE table)."""

    __tablename__ = "dataset_table_state"

    dataset_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    table_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    upload_state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    row_count: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    uploaded_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    error_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
