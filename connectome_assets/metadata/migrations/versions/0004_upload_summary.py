"""dataset_table_state: what the upload that holds the table read and dropped (its summary)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_table_state") as batch:
        batch.add_column(sa.Column("upload_summary", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_table_state") as batch:
        batch.drop_column("upload_summary")
