"""The warehouse and operations tables as they were before migrations (metadata.create_all).

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Written out table by table, not created from tables.py, so this revision never changes when
tables.py does. A database made by create_all before migrations is stamped at this revision.
"""
from alembic import op
import sqlalchemy as sa

from b123_pipelines.tables import Money  # NUMERIC(18,2) on PostgreSQL, integer øre on SQLite

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tenant():
    return sa.Column("tenant_id", sa.String(64), nullable=False)


def _ts(name, **kw):
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def _flag(name):
    return sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false())


def _count(name):
    return sa.Column(name, sa.Integer, nullable=False, server_default="0")


def _change_log(name, *subject):
    """account_changes and dimension_changes: what changed (`subject`) in which run."""
    op.create_table(
        name,
        sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
        _tenant(),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        *subject,
        sa.Column("name", sa.String(255)),
        sa.Column("old_name", sa.String(255)),
        _ts("detected_at", nullable=False),
    )
    op.create_index(f"ix_{name}_tenant", name, ["tenant_id", "run_id"])


def upgrade() -> None:
    # ------------------------------------------------------------ warehouse (read by budget123)
    op.create_table(
        "accounts",
        _tenant(),
        sa.Column("account_number", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("account_type", sa.String(32), nullable=False),
        _flag("blocked"),
        _flag("deleted"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "account_number"),
    )
    op.create_table(
        "dimension_values",
        _tenant(),
        sa.Column("dimension", sa.String(32), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("slot", sa.SmallInteger),
        sa.Column("allocation", sa.JSON),
        _flag("blocked"),
        _flag("deleted"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "dimension", "code"),
    )
    op.create_table(
        "transactions",
        _tenant(),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("account_number", sa.String(32), nullable=False),
        sa.Column("posting_date", sa.Date, nullable=False),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_in_currency", Money, nullable=False),
        sa.Column("voucher", sa.String(64), nullable=False, server_default=""),
        sa.Column("text", sa.String(255), nullable=False, server_default=""),
        sa.Column("entry_type", sa.String(32), nullable=False, server_default=""),
        sa.Column("dimension_1", sa.String(64), nullable=False, server_default=""),
        sa.Column("dimension_2", sa.String(64), nullable=False, server_default=""),
        sa.Column("dimension_3", sa.String(64), nullable=False, server_default=""),
        sa.Column("loaded_run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "entry_id"),
    )
    op.create_index("ix_transactions_period", "transactions", ["tenant_id", "period"])
    op.create_table(
        "budget_actuals",
        _tenant(),
        sa.Column("account_number", sa.String(32), nullable=False),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column("dimension_1", sa.String(64), nullable=False),
        sa.Column("dimension_2", sa.String(64), nullable=False),
        sa.Column("dimension_3", sa.String(64), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("entry_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period", "account_number", "dimension_1", "dimension_2", "dimension_3"
        ),
    )
    op.create_table(
        "dirty_periods",
        _tenant(),
        sa.Column("period", sa.Date, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "period"),
    )
    _change_log("account_changes",
                sa.Column("account_number", sa.String(32), nullable=False),
                sa.Column("old_account_number", sa.String(32)))
    _change_log("dimension_changes",
                sa.Column("dimension", sa.String(32), nullable=False),
                sa.Column("code", sa.String(64), nullable=False))
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        _tenant(),
        sa.Column("system", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128)),
        _flag("full_refresh"),
        _ts("started_at", nullable=False),
        _ts("finished_at"),
        sa.Column("status", sa.String(16), nullable=False),
        _count("transactions_fetched"),
        _count("transactions_new"),
        _count("accounts_changed"),
        _count("dimensions_changed"),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_sync_runs_tenant", "sync_runs", ["tenant_id", "started_at"])
    op.create_table(
        "sync_log",
        sa.Column("line_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        _tenant(),
        _ts("logged_at", nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("pages_total", sa.Integer),
        sa.Column("rows_so_far", sa.Integer),
    )
    op.create_index("ix_sync_log_run", "sync_log", ["run_id", "line_id"])
    op.create_table(
        "sync_cursors",
        _tenant(),
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("cursor", sa.JSON, nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "stream"),
    )
    # ------------------------------------------------------------ operations (ours)
    op.create_table(
        "sync_leases",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        _ts("acquired_at", nullable=False),
    )
    op.create_table(
        "sync_health",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        _ts("last_failure_at"),
        _ts("last_success_at"),
    )
    op.create_table(
        "credential_checks",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        _ts("checked_at", nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("warning", sa.Text),
    )


def downgrade() -> None:
    for table in ("credential_checks", "sync_health", "sync_leases", "sync_cursors", "sync_log",
                  "sync_runs", "dimension_changes", "account_changes", "dirty_periods",
                  "budget_actuals", "transactions", "dimension_values", "accounts"):
        op.drop_table(table)
