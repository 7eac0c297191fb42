"""Schema migrations, on SQLite and on the local PostgreSQL: old rows survive, models match the
migrated schema, and a PostgreSQL database behind the code says what to run."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from b123_pipelines import cli, db, migrations
from b123_pipelines import tables as t

HEAD = db.head_revision()
T0 = dt.datetime(2026, 1, 31, 23, 59, 59, 123456, tzinfo=dt.timezone.utc)
JAN = dt.date(2026, 1, 1)
TABLES = {table.name: table for table in t.all_tables()}
ONLY_POSTGRES = pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)

# Rows as revision 0001 knew them: one or more in every warehouse and operations table.
ROWS = {
    "accounts": [dict(tenant_id="acme", account_number="1010", name="Salg af varer", account_type="profitAndLoss",
                      blocked=False, deleted=True, updated_at=T0)],
    "account_changes": [dict(change_id=1, tenant_id="acme", run_id="run-1", change="moved", account_number="1020",
                             old_account_number="1010", name="Salg", old_name="Salg af varer", detected_at=T0)],
    "dimension_values": [dict(tenant_id="acme", dimension="distribution", code="7", name="Fordeling", slot=1,
                              allocation=[["1", 60], ["2", 40]], blocked=False, deleted=False, updated_at=T0)],
    "dimension_changes": [dict(change_id=1, tenant_id="acme", run_id="run-1", change="renamed",
                               dimension="department", code="1", name="Salg", old_name="Sælg", detected_at=T0)],
    "transactions": [
        dict(tenant_id="acme", entry_id="1", account_number="1010", posting_date=dt.date(2026, 1, 31), period=JAN,
             amount=Decimal("1234567890.99"), currency="EUR", amount_in_currency=Decimal("-0.01"), voucher="17",
             text="Faktura 17", entry_type="customerInvoice", dimension_1="7", dimension_2="", dimension_3="",
             loaded_run_id="run-1"),
        dict(tenant_id="acme", entry_id="2", account_number="1010", posting_date=JAN, period=JAN,
             amount=Decimal("-0.01"), currency="DKK", amount_in_currency=Decimal("-0.01"), voucher="", text="",
             entry_type="", dimension_1="", dimension_2="", dimension_3="", loaded_run_id="run-1"),
    ],
    "budget_actuals": [dict(tenant_id="acme", account_number="1010", period=JAN, dimension_1="7", dimension_2="",
                            dimension_3="", amount=Decimal("1234567890.98"), entry_count=2)],
    "dirty_periods": [dict(tenant_id="acme", period=JAN)],
    "sync_runs": [dict(run_id="run-1", tenant_id="acme", system="economic", trigger="first_login", user_id="ann",
                       full_refresh=True, started_at=T0, finished_at=T0, status="succeeded",
                       transactions_fetched=2, transactions_new=2, accounts_changed=1, dimensions_changed=1,
                       duration_seconds=3.25, message="Hentede 2 transaktioner på 3,2 sekunder")],
    "sync_log": [dict(line_id=1, run_id="run-1", tenant_id="acme", logged_at=T0, phase="transactions",
                      message="Side 1 af 1", page=1, pages_total=1, rows_so_far=2)],
    "sync_cursors": [dict(tenant_id="acme", stream="entries", cursor={"years": {"2025": 51234}}, updated_at=T0)],
    "sync_leases": [dict(tenant_id="acme", run_id="run-1", host="worker-1", pid=4242, acquired_at=T0)],
    "sync_health": [dict(tenant_id="acme", consecutive_failures=3, last_failure_at=T0, last_success_at=None)],
    "credential_checks": [dict(tenant_id="acme", checked_at=T0, ok=False, warning="Adgangs-ID'et er trukket tilbage")],
}

# Tables a later revision adds, with rows as that revision knows them (inserted once it has run).
ADDED_LATER = {
    "token_caches": [dict(tenant_id="acme", ciphertext="gAAAAABn-Fernet-ciphertext", updated_at=T0)],  # 0004
}


@pytest.fixture
def blank(empty_database_url):
    engine = db.new_engine(empty_database_url)
    yield engine
    engine.dispose()


def insert_rows(engine) -> None:
    with engine.begin() as conn:
        for name, rows in ROWS.items():
            conn.execute(TABLES[name].insert(), rows)


def stored(engine, name: str) -> list[dict]:
    """The table's rows, in the columns ROWS gives, with SQLite's naive datetimes made UTC."""
    table = TABLES[name]
    columns = [table.c[column] for column in ROWS[name][0]]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).order_by(*table.primary_key.columns)).mappings().all()
    return [{k: db.utc(v) if isinstance(v, dt.datetime) else v for k, v in row.items()} for row in rows]


def columns(engine, table: str) -> dict:
    return {c["name"]: c for c in sa.inspect(engine).get_columns(table)}


def test_rows_of_revision_0001_survive_the_upgrade_and_gain_the_new_columns(blank):
    assert set(ROWS) | set(ADDED_LATER) == migrations.MIGRATED_TABLES  # a new table needs a row here
    db.upgrade(blank, app_tables=False, revision="0001")
    assert db.current_revision(blank) == "0001"
    assert "source_modified_at" not in columns(blank, "transactions")
    assert "api_calls" not in columns(blank, "sync_runs")
    insert_rows(blank)

    db.upgrade(blank, app_tables=False)

    assert db.current_revision(blank) == HEAD
    for name, rows in ROWS.items():
        assert stored(blank, name) == rows, name
    with blank.connect() as conn:
        assert conn.execute(sa.select(t.transactions.c.source_modified_at)).scalars().all() == [None, None]
        assert conn.execute(sa.select(t.sync_runs.c.api_calls)).scalars().all() == [0]
    assert columns(blank, "transactions")["source_modified_at"]["nullable"]
    assert not columns(blank, "sync_runs")["api_calls"]["nullable"]
    # Money as Money renders it: exact NUMERIC(18,2) on PostgreSQL, whole øre on SQLite.
    amount = columns(blank, "transactions")["amount"]["type"]
    if blank.dialect.name == "postgresql":
        assert isinstance(amount, sa.Numeric) and (amount.precision, amount.scale) == (18, 2)
    else:
        assert isinstance(amount, sa.BigInteger)
    assert not sa.inspect(blank).has_table("tenants")  # the app's tables only on request
    for name, rows in ADDED_LATER.items():
        with blank.begin() as conn:
            conn.execute(TABLES[name].insert(), rows)
            assert [{k: db.utc(v) if isinstance(v, dt.datetime) else v for k, v in row.items()} for row in
                    conn.execute(sa.select(TABLES[name])).mappings()] == rows, name


def test_revision_0004_adds_token_caches_and_going_back_drops_them(blank):
    db.upgrade(blank, app_tables=False, revision="0003")
    assert not sa.inspect(blank).has_table("token_caches")
    db.upgrade(blank, app_tables=False, revision="0004")
    with blank.begin() as conn:
        conn.execute(t.token_caches.insert(), ADDED_LATER["token_caches"])

    db.downgrade(blank, "0003")

    assert not sa.inspect(blank).has_table("token_caches")
    db.upgrade(blank, app_tables=False)
    assert sa.inspect(blank).has_table("token_caches")


def test_models_in_tables_py_match_the_migrated_schema(blank):
    db.upgrade(blank, app_tables=True)
    with blank.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True,
            # Alembic reports SQLite's reflected '' defaults as different from '' even when equal.
            "compare_server_default": conn.dialect.name == "postgresql",
            "include_name": migrations.include_name,
        })
        assert compare_metadata(context, list(t.MIGRATED_METADATA)) == []


@ONLY_POSTGRES
def test_engine_for_refuses_a_postgres_database_behind_head(empty_database_url, blank):
    hidden = empty_database_url.replace("postgres@", "postgres:s3cret@")
    with pytest.raises(db.SchemaOutOfDate) as empty:
        db.engine_for(hidden)
    assert "s3cret" not in str(empty.value)
    assert str(empty.value) == (f"The warehouse database at {empty_database_url} is at revision none; this version of "
                                f"b123-pipelines needs {HEAD}. Run 'b123 db upgrade'.")
    db.upgrade(blank, app_tables=True, revision="0001")
    with pytest.raises(db.SchemaOutOfDate, match=f"is at revision 0001; this version of b123-pipelines needs {HEAD}. "
                                                 r"Run 'b123 db upgrade'\."):
        db.engine_for(empty_database_url)
    db.upgrade(blank, app_tables=True)
    assert db.engine_for(empty_database_url).dialect.name == "postgresql"


@ONLY_POSTGRES
def test_b123_db_upgrade_brings_a_fresh_postgres_schema_to_head(empty_database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("B123_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("B123_HOME", str(tmp_path / "home"))
    assert cli.main(["tenant", "list"]) == 1
    assert "Run 'b123 db upgrade'" in capsys.readouterr().err
    assert cli.main(["db", "current"]) == 0
    assert capsys.readouterr().out.startswith(f"none (this version of b123-pipelines needs {HEAD}")

    assert cli.main(["db", "upgrade", "--app-tables"]) == 0
    assert f"revision none -> {HEAD}, app tables created" in capsys.readouterr().out
    assert cli.main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"{HEAD} (head)"
    assert cli.main(["tenant", "list"]) == 0  # engine_for accepts it; the app's tables are there
    assert cli.main(["db", "upgrade"]) == 0  # again: nothing to do
    assert f"revision {HEAD} -> {HEAD}." in capsys.readouterr().out


def test_downgrade_to_0001_and_upgrade_again(blank):
    db.upgrade(blank, app_tables=False, revision="0001")
    insert_rows(blank)  # as 0001 knew them: later revisions may add columns they must fill
    db.upgrade(blank, app_tables=False)
    with blank.begin() as conn:
        conn.execute(t.transactions.update().values(source_modified_at=T0))
        conn.execute(t.sync_runs.update().values(api_calls=7))

    db.downgrade(blank, "0001")
    assert db.current_revision(blank) == "0001"
    assert "source_modified_at" not in columns(blank, "transactions")
    assert "api_calls" not in columns(blank, "sync_runs")
    db.upgrade(blank, app_tables=False)

    assert db.current_revision(blank) == HEAD
    for name, rows in ROWS.items():
        assert stored(blank, name) == rows, name
    with blank.connect() as conn:
        assert conn.execute(sa.select(t.sync_runs.c.api_calls)).scalar() == 0


def test_a_database_made_before_migrations_is_baselined_then_upgraded(blank):
    # What metadata.create_all made before migrations: revision 0001's tables, no alembic_version.
    db.upgrade(blank, app_tables=True, revision="0001")
    insert_rows(blank)
    with blank.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    assert db.current_revision(blank) is None

    db.upgrade(blank, app_tables=True)

    assert db.current_revision(blank) == HEAD
    assert stored(blank, "transactions") == ROWS["transactions"]


def test_processes_upgrading_one_database_at_once_take_turns(empty_database_url):
    script = ("import sys; from b123_pipelines import db; "
              "db.upgrade(db.new_engine(sys.argv[1]), app_tables=True); print(db.head_revision())")
    processes = [subprocess.Popen([sys.executable, "-c", script, empty_database_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == HEAD
    engine = db.new_engine(empty_database_url)
    assert db.current_revision(engine) == HEAD
    engine.dispose()
