"""The tables: the app's (which we read) and the warehouse's (which the app reads).

Every row carries its tenant_id. The warehouse tables are a contract with the budget123 app and are
documented column by column in README.md; change them only together with that section and a new
revision in b123_pipelines/migrations/versions/ (tests compare the two).
"""

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

# One MetaData per owner. The app's tables belong to budget123 (only development creates them, with
# `b123 db upgrade --app-tables`); the warehouse tables are the contract the app reads and the
# operations tables are ours: both change only through a migration (b123_pipelines/migrations).
app_metadata = sa.MetaData()
warehouse_metadata = sa.MetaData()
operations_metadata = sa.MetaData()
ALL_METADATA = (app_metadata, warehouse_metadata, operations_metadata)
MIGRATED_METADATA = (warehouse_metadata, operations_metadata)


def all_tables() -> list[sa.Table]:
    """Every table, app, warehouse and operations alike (e.g. to remove a tenant everywhere)."""
    return [table for metadata in ALL_METADATA for table in metadata.sorted_tables]


ORE = Decimal("0.01")


class Money(TypeDecorator):
    """Exact money: NUMERIC(18, 2) where the database has it, integer øre on SQLite.

    SQLite has no exact decimal (NUMERIC columns silently become floats), so there the amount is
    stored as a whole number of øre; SUM() stays exact and values come back as Decimal.
    """

    impl = sa.Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name != "sqlite":
            return value
        return int(Decimal(value).scaleb(2).to_integral_exact())

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2).quantize(ORE)
        return Decimal(value).quantize(ORE)


def _tenant_fk():
    return sa.Column("tenant_id", sa.String(64), nullable=False)


def _ts(name, **kw):
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


# ---------------------------------------------------------------- app tables (owned by budget123)
tenants = sa.Table(
    "tenants", app_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("system", sa.String(32), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="Europe/Copenhagen"),
    sa.Column("locale", sa.String(2), nullable=False, server_default="da"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    # Set when the accounting system rejects the stored credentials; cleared when new ones are stored.
    sa.Column("awaiting_credentials", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("created_at", nullable=False),
)

connection_settings = sa.Table(
    "connection_settings", app_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("settings", sa.JSON, nullable=False),  # non-secret settings, e.g. base_url
)

credentials = sa.Table(
    "credentials", app_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),  # Fernet token of the secret fields' JSON
    _ts("updated_at", nullable=False),
)

roles = sa.Table(
    "roles", app_metadata,
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Column("can_fetch_figures", sa.Boolean, nullable=False, server_default=sa.false()),
)

users = sa.Table(
    "users", app_metadata,
    sa.Column("user_id", sa.String(128), primary_key=True),
    _tenant_fk(),
    sa.Column("role", sa.String(64), nullable=False),
    sa.Column("auto_refresh", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_users_tenant", "tenant_id"),
)

user_logins = sa.Table(
    "user_logins", app_metadata,
    sa.Column("login_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    _tenant_fk(),
    _ts("logged_in_at", nullable=False),
)

sync_requests = sa.Table(
    "sync_requests", app_metadata,
    sa.Column("request_id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant_fk(),
    sa.Column("user_id", sa.String(128), nullable=False),
    _ts("requested_at", nullable=False),
    # queued | running | done | failed | refused
    sa.Column("state", sa.String(16), nullable=False, server_default="new"),
    sa.Column("reason", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_sync_requests_tenant", "tenant_id", "state"),
)

# ---------------------------------------------------------------- warehouse (read by budget123)
accounts = sa.Table(
    "accounts", warehouse_metadata,
    _tenant_fk(),
    sa.Column("account_number", sa.String(32), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("account_type", sa.String(32), nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("updated_at", nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "account_number"),
)

dimension_values = sa.Table(
    "dimension_values", warehouse_metadata,
    _tenant_fk(),
    sa.Column("dimension", sa.String(32), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    # Which transactions column (dimension_1..3) carries this dimension's codes; NULL when none.
    sa.Column("slot", sa.SmallInteger),
    # How a value splits over another dimension's values (e-conomic's departmental distributions).
    sa.Column("allocation", sa.JSON),
    sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("updated_at", nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "dimension", "code"),
)

transactions = sa.Table(
    "transactions", warehouse_metadata,
    _tenant_fk(),
    sa.Column("entry_id", sa.String(64), nullable=False),
    sa.Column("account_number", sa.String(32), nullable=False),
    sa.Column("posting_date", sa.Date, nullable=False),
    sa.Column("period", sa.Date, nullable=False),  # first day of posting_date's month
    sa.Column("amount", Money, nullable=False),  # in the books' base currency
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_in_currency", Money, nullable=False),
    sa.Column("voucher", sa.String(64), nullable=False, server_default=""),
    sa.Column("text", sa.String(255), nullable=False, server_default=""),
    sa.Column("entry_type", sa.String(32), nullable=False, server_default=""),
    sa.Column("dimension_1", sa.String(64), nullable=False, server_default=""),
    sa.Column("dimension_2", sa.String(64), nullable=False, server_default=""),
    sa.Column("dimension_3", sa.String(64), nullable=False, server_default=""),
    sa.Column("loaded_run_id", sa.String(64), nullable=False),
    # When the source last changed the entry (Business Central lets users correct a posted entry's
    # dimensions and sends it again with a newer lastModifiedDateTime); NULL when it does not say.
    _ts("source_modified_at"),
    sa.PrimaryKeyConstraint("tenant_id", "entry_id"),
    sa.Index("ix_transactions_period", "tenant_id", "period"),
)

budget_actuals = sa.Table(
    "budget_actuals", warehouse_metadata,
    _tenant_fk(),
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

# Months whose actuals must be recomputed; written with the transactions that touch them so a
# sync killed between transactions and actuals still recomputes them next time.
dirty_periods = sa.Table(
    "dirty_periods", warehouse_metadata,
    _tenant_fk(),
    sa.Column("period", sa.Date, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "period"),
)

account_changes = sa.Table(
    "account_changes", warehouse_metadata,
    sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant_fk(),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("change", sa.String(16), nullable=False),  # added | renamed | moved | deleted | changed
    sa.Column("account_number", sa.String(32), nullable=False),
    sa.Column("old_account_number", sa.String(32)),
    sa.Column("name", sa.String(255)),
    sa.Column("old_name", sa.String(255)),
    _ts("detected_at", nullable=False),
    sa.Index("ix_account_changes_tenant", "tenant_id", "run_id"),
)

dimension_changes = sa.Table(
    "dimension_changes", warehouse_metadata,
    sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
    _tenant_fk(),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("change", sa.String(16), nullable=False),  # added | renamed | deleted | changed
    sa.Column("dimension", sa.String(32), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("old_name", sa.String(255)),
    _ts("detected_at", nullable=False),
    sa.Index("ix_dimension_changes_tenant", "tenant_id", "run_id"),
)

sync_runs = sa.Table(
    "sync_runs", warehouse_metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),  # the Dagster run id
    _tenant_fk(),
    sa.Column("system", sa.String(32), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),  # manual | first_login | refresh_request | backfill | schedule
    sa.Column("user_id", sa.String(128)),
    sa.Column("full_refresh", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    sa.Column("status", sa.String(16), nullable=False),  # running | succeeded | failed
    sa.Column("transactions_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("transactions_new", sa.Integer, nullable=False, server_default="0"),
    sa.Column("accounts_changed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dimensions_changed", sa.Integer, nullable=False, server_default="0"),
    # Calls the update spent against the accounting system's API (Uniconta's daily call budget).
    sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("duration_seconds", sa.Float),  # a duration, not money
    sa.Column("message", sa.Text),
    sa.Index("ix_sync_runs_tenant", "tenant_id", "started_at"),
)

sync_log = sa.Table(
    "sync_log", warehouse_metadata,
    sa.Column("line_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    _tenant_fk(),
    _ts("logged_at", nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("page", sa.Integer),
    sa.Column("pages_total", sa.Integer),
    sa.Column("rows_so_far", sa.Integer),
    sa.Index("ix_sync_log_run", "run_id", "line_id"),
)

# The connector's opaque incremental state per stream; moved in the same database transaction
# as the rows it covers.
sync_cursors = sa.Table(
    "sync_cursors", warehouse_metadata,
    _tenant_fk(),
    sa.Column("stream", sa.String(32), nullable=False),
    sa.Column("cursor", sa.JSON, nullable=False),
    _ts("updated_at", nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "stream"),
)

# ---------------------------------------------------------------- operations (ours)
# Held by the one process that updates a tenant, for the length of one phase: even a run started
# by hand cannot load a tenant another run is loading.
sync_leases = sa.Table(
    "sync_leases", operations_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    _ts("acquired_at", nullable=False),
    # Renewed while the update runs; stale when it stops.
    _ts("renewed_at", nullable=False, server_default=sa.func.now()),
)

# Consecutive failures per tenant, for the automatic triggers' back-off.
sync_health = sa.Table(
    "sync_health", operations_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    _ts("last_failure_at"),
    _ts("last_success_at"),
)

# The credential-health schedule's latest finding per tenant, shown by the app as a warning.
credential_checks = sa.Table(
    "credential_checks", operations_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    _ts("checked_at", nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("warning", sa.Text),
)

# A tenant's OAuth token cache between runs (Business Central's Entra ID tokens, about an hour
# each): MSAL's serialized cache, Fernet-encrypted with the tenant's vault like its credentials.
# One row per tenant, so two tenants on the same Entra app never share a token.
token_caches = sa.Table(
    "token_caches", operations_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    _ts("updated_at", nullable=False),
)
