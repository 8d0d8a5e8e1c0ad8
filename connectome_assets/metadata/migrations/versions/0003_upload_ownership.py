"""dataset_table_state: the owner and lease of an upload, so a killed upload is recognised

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("upload_id", "upload_owner", "upload_started_at", "lease_expires_at")


def upgrade() -> None:
    with op.batch_alter_table("dataset_table_state") as batch:
        batch.add_column(sa.Column("upload_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("upload_owner", sa.String(256), nullable=True))
        batch.add_column(sa.Column("upload_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_table_state") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
