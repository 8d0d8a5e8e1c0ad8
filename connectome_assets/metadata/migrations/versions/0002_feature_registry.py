"""feature registry: users, groups, grants, tokens, table versions, tags, lineage, usage, audit

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PUBLISHED = sa.text("status = 'published'")


def upgrade() -> None:
    op.create_table(
        "registry_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("daily_byte_quota", sa.BigInteger(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "registry_groups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
    )
    op.create_table(
        "registry_group_members",
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("registry_groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("registry_users.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_table(
        "registry_grants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("registry_users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("registry_groups.id", ondelete="CASCADE"), nullable=True),
        sa.Column("datastack", sa.String(128), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.CheckConstraint("level IN ('read', 'write', 'admin')", name="ck_grant_level"),
        sa.CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="ck_grant_principal"),
    )
    op.create_table(
        "registry_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("registry_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "registry_table_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("volume", sa.JSON(), nullable=True),
        sa.Column("schema_source", sa.String(16), nullable=False),
        sa.Column("schema_note", sa.Text(), nullable=False),
        sa.Column("datastack", sa.String(128), nullable=False, index=True),
        sa.Column("aligned_volume", sa.String(128), nullable=True),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("materialization_version", sa.String(128), nullable=True, index=True),
        sa.Column("owner_team", sa.String(128), nullable=True),
        sa.Column("owner_person", sa.String(128), nullable=True),
        sa.Column("invalidation_radius_nm", sa.Float(), nullable=True),
        sa.Column("license", sa.Text(), nullable=True),
        sa.Column("usage_constraints", sa.Text(), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("citation", sa.Text(), nullable=True),
        sa.Column("annotation_refs", sa.JSON(), nullable=False),
        sa.Column("produced_by", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("superseded_by_id", sa.Integer(), sa.ForeignKey("registry_table_versions.id"), nullable=True),
        sa.Column("partition_columns", sa.JSON(), nullable=False),
        sa.Column("hash_function", sa.String(64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_table_version"),
        sa.CheckConstraint("status IN ('draft', 'published', 'deprecated')", name="ck_table_status"),
    )
    op.create_index("ux_one_published", "registry_table_versions", ["name"], unique=True, sqlite_where=PUBLISHED, postgresql_where=PUBLISHED)
    op.create_table(
        "registry_tags",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("registry_table_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True, index=True),
    )
    op.create_table(
        "registry_lineage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("child_id", sa.Integer(), sa.ForeignKey("registry_table_versions.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("registry_table_versions.id"), nullable=True, index=True),
        sa.Column("parent_uri", sa.Text(), nullable=True),
        sa.CheckConstraint("(parent_id IS NULL) <> (parent_uri IS NULL)", name="ck_lineage_parent"),
    )
    op.create_table(
        "registry_usage",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("registry_users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "registry_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("user_name", sa.String(128), nullable=True, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("table_name", sa.String(128), nullable=True),
        sa.Column("table_version", sa.Integer(), nullable=True),
        sa.Column("datastack", sa.String(128), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("client", sa.String(128), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "registry_audit",
        "registry_usage",
        "registry_lineage",
        "registry_tags",
        "registry_table_versions",
        "registry_tokens",
        "registry_grants",
        "registry_group_members",
        "registry_groups",
        "registry_users",
    ):
        op.drop_table(table)
