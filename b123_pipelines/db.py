"""Engines for the warehouse and app tables, on SQLite (embedded default) or PostgreSQL.

The schema changes only through migrations (b123_pipelines/migrations). `engine_for` brings an
SQLite database to the current revision by itself; a PostgreSQL database must already be there
(`b123 db upgrade`, before new code is deployed), or `engine_for` says so.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import io
import threading
from pathlib import Path
from typing import Iterable, Sequence

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from b123_pipelines import migrations
from b123_pipelines import tables as t


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive UTC; PostgreSQL aware datetimes."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


class SchemaOutOfDate(Exception):
    """The database is behind the migrations this code needs."""


@functools.lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process, on a database at the current schema revision.

    SQLite (the embedded default, development) is upgraded here, the app's tables included, so the
    demo and the CLI just work. Any other database is only checked, once per engine: upgrading it is
    a deployment step (`b123 db upgrade`), and SchemaOutOfDate says so when it was skipped.
    """
    engine = new_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            upgrade(engine, app_tables=True)
        else:
            _require_head(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def new_engine(url: str) -> Engine:
    """An engine for the URL, as is: no schema check, no upgrade (engine_for does those)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # A database host that never answers is an error after 10 s, not a hang.
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    return engine


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    return sa.engine.make_url(url)._replace(password=None).render_as_string(hide_password=False)


def connection_problem(exc: BaseException) -> str | None:
    """What went wrong in words, when `exc` (or what caused it) is the database being unreachable
    or its connection lost; None for any other error (a bug, a constraint, ...). The first cause is
    said (the server closed the connection), not what it led to (rolling back on a closed one)."""
    problem, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        # SQLAlchemy's and the drivers' own (DB-API) classes alike: COPY runs on the raw connection.
        if type(exc).__name__ in ("OperationalError", "InterfaceError") or (
                isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated):
            text = str(getattr(exc, "orig", None) or exc).split(" failed: ", 1)[-1]
            problem = first_line(text) or type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    return problem


def first_line(text: str) -> str:
    """A driver's error message as one short line (psycopg2's run over several)."""
    lines = text.replace("FATAL:", "").strip().splitlines()
    return " ".join(lines[0].split())[:200] if lines else ""


def unusable_database(url: str, exc: BaseException) -> str:
    """One line for a database that cannot be used: which, what failed, what to do."""
    if isinstance(exc, sa.exc.ArgumentError):
        return (f"B123_DATABASE_URL is not a database URL SQLAlchemy can use ({str(exc).splitlines()[0]}); "
                "e.g. postgresql+psycopg2://user@host:5432/db.")
    problem = connection_problem(exc) or " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
    lower = problem.lower()
    if "refused" in lower:
        advice = "Is the database server running there? Check the host and port in B123_DATABASE_URL."
    elif "database" in lower and "does not exist" in lower:
        advice = "Create that database, or correct the database name in B123_DATABASE_URL."
    elif "authentication" in lower or ("role" in lower and "does not exist" in lower):
        advice = "Check the user and password in B123_DATABASE_URL."
    elif "host name" in lower:
        advice = "Check the host name in B123_DATABASE_URL."
    elif "unable to open database file" in lower:
        advice = "Check that B123_HOME is a folder this user can write to."
    else:
        advice = "Check that the database is up and that B123_DATABASE_URL is right."
    try:
        where = display_url(url)
    except sa.exc.ArgumentError:
        where = "B123_DATABASE_URL"
    return f"cannot use the warehouse database at {where}: {problem}. {advice}"


# ---------------------------------------------------------------- migrations
@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrations.config())


def head_revision() -> str:
    return _scripts().get_current_head()


def current_revision(connectable) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    with contextlib.ExitStack() as stack:
        conn = connectable if isinstance(connectable, sa.Connection) else stack.enter_context(connectable.connect())
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def migrating(engine: Engine):
    """One transaction that alone may migrate this database: others wait for it, then see its work.

    PostgreSQL: a transaction-level advisory lock per schema (the tests' URLs select one through
    search_path; DDL is transactional there). SQLite: BEGIN IMMEDIATE, its write lock, held from
    the first statement (pysqlite would otherwise begin only before the first INSERT).
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('b123_pipelines.migrations'), "
                                 "hashtext(current_schema()))"))
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


# Alembic's `op` and `context` are process-wide: one migration at a time in this process.
_alembic = threading.Lock()


def upgrade(engine: Engine, app_tables: bool, revision: str = "head") -> None:
    """Migrates the warehouse and operations tables to `revision` (default: the newest).

    A database whose tables were made before migrations (no alembic_version, but sync_runs) is
    first stamped at the baseline those tables are. app_tables: also create the app's tables where
    missing; for development and tests only, since in production budget123 owns them.
    """
    with _alembic, migrating(engine) as conn:
        config = migrations.config(connection=conn)
        if current_revision(conn) is None and sa.inspect(conn).has_table("sync_runs"):
            command.stamp(config, migrations.BASELINE)
        command.upgrade(config, revision)
        if app_tables:
            t.app_metadata.create_all(conn)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrates back to `revision`; what the newer revisions added is dropped with its data."""
    with _alembic, migrating(engine) as conn:
        command.downgrade(migrations.config(connection=conn), revision)


def _require_head(engine: Engine, url: str) -> None:
    with engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current == head:
        return
    known = {script.revision for script in _scripts().walk_revisions()}
    if current is not None and current not in known:
        return  # a newer release migrated it; its migrations keep this release working (additive only)
    raise SchemaOutOfDate(
        f"The warehouse database at {display_url(url)} is at revision {current or 'none'}; this version "
        f"of b123-pipelines needs {head}. Run 'b123 db upgrade'.")


def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets the app (and the CLI's live log) read while a sync writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def upsert(conn, table: sa.Table, rows: Sequence[dict], keys: Iterable[str], update: bool = True):
    """INSERT ... ON CONFLICT on the table's key, updating the other columns (or leaving the row)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    keys = list(keys)
    if update:
        changing = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changing)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, list(rows))


def copy_upsert(conn, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple], keys: Iterable[str]) -> int:
    """PostgreSQL's fast path for `upsert` of many rows; returns how many keys were stored before.

    SQLAlchemy runs an INSERT ... ON CONFLICT executemany row by row, one round trip each. Here,
    in the caller's transaction, the rows are first COPYed straight into the table inside a
    savepoint: when none of their keys is stored (a first load, new entries) that is all, and
    none was stored before. When one is, the unique key stops the COPY, the savepoint is rolled
    back, and the rows are COPYed into a temporary staging table shaped like `table` and moved
    with one INSERT ... SELECT ... ON CONFLICT DO UPDATE, which reports per row whether it
    inserted or updated. `keys` must be the table's primary key (or a unique key) and unique within
    `rows` (as in one page); each row is a tuple of `columns`' values. Values must be plain scalars
    (str, int, bool, Decimal, date, datetime or None); Decimals are written as their exact text, never through float.
    """
    from psycopg2.errors import UniqueViolation

    if not rows:
        return 0
    keys = list(keys)
    quoted = ", ".join(f'"{c}"' for c in columns)
    name = f'"{table.name}"'
    buffer = io.StringIO()
    # Strings, dates and times are quoted; numbers, Decimals and bools are written by str(). The csv
    # module writes None as a quoted "", which COPY keeps as an empty string; FORCE_NULL reads it as
    # NULL in the columns where '' cannot be a value (nullable columns that are not text).
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerows(rows)
    nullable = [f'"{c}"' for c in columns if table.c[c].nullable and not isinstance(table.c[c].type, sa.String)]
    force_null = f", FORCE_NULL ({', '.join(nullable)})" if nullable else ""
    copy = f"COPY {{}} ({quoted}) FROM STDIN WITH (FORMAT csv{force_null})"
    size = max(buffer.tell(), 8192)  # the whole page in one write
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT b123_copy")
        try:
            buffer.seek(0)
            cur.copy_expert(copy.format(name), buffer, size=size)
        except UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT b123_copy")
        else:
            return 0  # the savepoint ends with the transaction: no RELEASE round trip
        stage = f'"_stage_{table.name}"'
        cur.execute(f"SET LOCAL client_min_messages = warning; "
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {name}) ON COMMIT DELETE ROWS; "
                    f"DELETE FROM {stage}")
        buffer.seek(0)
        cur.copy_expert(copy.format(stage), buffer, size=size)
        conflict = ", ".join(f'"{k}"' for k in keys)
        changing = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in keys)
        # xmax is 0 on a row version this statement inserted, and set on one it updated.
        cur.execute(f"WITH moved AS (INSERT INTO {name} ({quoted}) SELECT {quoted} FROM {stage} "
                    f"ON CONFLICT ({conflict}) DO UPDATE SET {changing} RETURNING xmax = 0 AS inserted) "
                    f"SELECT count(*) FILTER (WHERE NOT inserted) FROM moved")
        return cur.fetchone()[0]
