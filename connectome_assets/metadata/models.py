"""SQLAlchemy models of the metadata database (datasets, upload state, the feature registry).

The schema is owned by the Alembic migrations; these classes must match them.
"""

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
    # The upload that holds (or last held) the table: its id, its process (`host:pid:start`),
    # when it began, and until when its heartbeat vouches for it.
    upload_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    upload_owner: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    upload_started_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    # What the upload holding the rows read and dropped (e.g. the endpoint filter's counts); set with
    # row_count, so it always describes the rows the warehouse holds.
    upload_summary: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)


# Feature registry ---------------------------------------------------------------------------
# Versions of a table name are rows of `registry_table_versions`; lineage, tags, grants, tokens,
# daily usage and the audit log are their own tables. Free-form lists (columns, files,
# annotation references) are JSON; everything searched on is a column or its own table.


class RegistryUser(Base):
    __tablename__ = "registry_users"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True, nullable=False)
    daily_byte_quota: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)  # None: the registry's default
    disabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class RegistryGroup(Base):
    __tablename__ = "registry_groups"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True, nullable=False)


class RegistryGroupMember(Base):
    __tablename__ = "registry_group_members"

    group_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_users.id", ondelete="CASCADE"), primary_key=True)


class RegistryGrant(Base):
    """A user's or a group's level on one datastack (`*`: every datastack)."""

    __tablename__ = "registry_grants"
    __table_args__ = (
        sa.CheckConstraint("level IN ('read', 'write', 'admin')", name="ck_grant_level"),
        sa.CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="ck_grant_principal"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("registry_users.id", ondelete="CASCADE"), nullable=True)
    group_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("registry_groups.id", ondelete="CASCADE"), nullable=True)
    datastack: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    level: Mapped[str] = mapped_column(sa.String(8), nullable=False)


class RegistryToken(Base):
    """A bearer token, stored as its SHA-256: the token itself is shown once, at creation."""

    __tablename__ = "registry_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_users.id", ondelete="CASCADE"), nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)


class RegistryTableVersion(Base):
    __tablename__ = "registry_table_versions"
    __table_args__ = (
        sa.UniqueConstraint("name", "version", name="uq_table_version"),
        sa.CheckConstraint("status IN ('draft', 'published', 'deprecated')", name="ck_table_status"),
        # At most one current published version per name, enforced by the database itself.
        sa.Index("ux_one_published", "name", unique=True, sqlite_where=sa.text("status = 'published'"), postgresql_where=sa.text("status = 'published'")),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), nullable=False, index=True)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    description: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    location: Mapped[str] = mapped_column(sa.Text, nullable=False)
    format: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    columns: Mapped[list | None] = mapped_column(sa.JSON, nullable=True)  # [{name, type, description}]
    volume: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)  # a neuroglancer volume's info summary
    schema_source: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # detected | declared
    schema_note: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    datastack: Mapped[str] = mapped_column(sa.String(128), nullable=False, index=True)
    aligned_volume: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    snapshot_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    valid_from: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    valid_to: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    materialization_version: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, index=True)
    owner_team: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    owner_person: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    invalidation_radius_nm: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    license: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    usage_constraints: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    retention_days: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    citation: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    annotation_refs: Mapped[list] = mapped_column(sa.JSON, nullable=False, default=list)  # [{table, column}]
    produced_by: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)  # pipeline or model version
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    superseded_by_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("registry_table_versions.id"), nullable=True)
    partition_columns: Mapped[list] = mapped_column(sa.JSON, nullable=False, default=list)
    hash_function: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    row_count: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    files: Mapped[list] = mapped_column(sa.JSON, nullable=False)  # [{uri, bytes, rows}]
    file_count: Mapped[int] = mapped_column(sa.Integer, nullable=False)  # so listings need not load `files`
    registered_by: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    registered_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    status_changed_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)


class RegistryTag(Base):
    __tablename__ = "registry_tags"

    version_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_table_versions.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)


class RegistryLineage(Base):
    """`child` was derived from a registered version (`parent_id`) or from data outside the registry (`parent_uri`)."""

    __tablename__ = "registry_lineage"
    __table_args__ = (sa.CheckConstraint("(parent_id IS NULL) <> (parent_uri IS NULL)", name="ck_lineage_parent"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    child_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_table_versions.id", ondelete="CASCADE"), nullable=False, index=True)
    parent_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("registry_table_versions.id"), nullable=True, index=True)
    parent_uri: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class RegistryUsage(Base):
    """Bytes of access granted to a user on one UTC day (the daily quota is checked against it)."""

    __tablename__ = "registry_usage"

    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("registry_users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(sa.Date, primary_key=True)
    bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)


class RegistryAudit(Base):
    __tablename__ = "registry_audit"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, index=True)
    user_name: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, index=True)
    action: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    outcome: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # ok | refused
    status_code: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    table_name: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    table_version: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    datastack: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    detail: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    client: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
