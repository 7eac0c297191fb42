"""transactions.source_modified_at and sync_runs.api_calls, for Business Central and Uniconta.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Both are nullable or defaulted, so old rows stay valid and code one release older keeps working.
- transactions.source_modified_at: when the source last changed the entry. Business Central lets
  users correct a posted entry's dimensions and sends it again with a newer lastModifiedDateTime.
- sync_runs.api_calls: calls the update spent against the accounting system's API, for Uniconta's
  daily call budget.
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("source_modified_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("api_calls")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("source_modified_at")
