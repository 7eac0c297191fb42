"""sync_leases.renewed_at: an update renews its lease while it runs, so a dead one is found.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Before, a lease left by a process on another host was trusted for six hours. Now the update renews
it every 15 seconds and a lease not renewed for two minutes is stale (guard.py, recovery.py).
Existing leases get their acquired_at as a first renewal; the server default (now) keeps the
inserts of a release one older working during a rolling deploy.
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_leases") as batch:
        batch.add_column(sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE sync_leases SET renewed_at = acquired_at")
    with op.batch_alter_table("sync_leases") as batch:
        batch.alter_column("renewed_at", existing_type=sa.DateTime(timezone=True), nullable=False,
                           server_default=sa.func.now())


def downgrade() -> None:
    with op.batch_alter_table("sync_leases") as batch:
        batch.drop_column("renewed_at")
