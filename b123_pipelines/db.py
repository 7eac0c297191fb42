"""Engines for the warehouse and app tables, on SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import operator
from pathlib import Path
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from b123_pipelines.tables import metadata


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@functools.lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process, with the tables created if missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


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


def copy_upsert(conn, table: sa.Table, rows: Sequence[dict], keys: Iterable[str]) -> int:
    """PostgreSQL's fast path for `upsert` of many rows; returns how many keys were stored before.

    The rows are COPYed into a temporary staging table shaped like `table`, then moved with one
    INSERT ... SELECT ... ON CONFLICT DO UPDATE, all in the caller's transaction: three round trips
    a page instead of one per row (SQLAlchemy runs an ON CONFLICT executemany row by row). Values
    must be plain scalars (str, int, bool, Decimal, date, datetime or None); Decimals are written as
    their exact text, never through float. Keys must be unique within `rows` (as in one page).
    """
    if not rows:
        return 0
    keys = list(keys)
    columns = list(rows[0])
    quoted = ", ".join(f'"{c}"' for c in columns)
    stage = f'"_stage_{table.name}"'
    raw = conn.connection.driver_connection
    buffer = io.StringIO()
    # Strings, dates and times are quoted; numbers, Decimals and bools are written by str(); None is
    # an unquoted empty field, which COPY reads as NULL (a quoted "" stays an empty string).
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    values = operator.itemgetter(*columns)
    writer.writerows([values(row) for row in rows])
    buffer.seek(0)
    on = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
    conflict = ", ".join(f'"{k}"' for k in keys)
    changing = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in keys)
    with raw.cursor() as cur:
        cur.execute(f"SET LOCAL client_min_messages = warning; "
                    f'CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE "{table.name}") ON COMMIT DELETE ROWS; '
                    f"DELETE FROM {stage}")
        cur.copy_expert(f"COPY {stage} ({quoted}) FROM STDIN WITH (FORMAT csv)", buffer)
        # One statement: the CTE counts against the snapshot from before the INSERT.
        cur.execute(
            f'WITH existing AS (SELECT count(*) AS n FROM "{table.name}" t JOIN {stage} s ON {on}), '
            f'moved AS (INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM {stage} '
            f"ON CONFLICT ({conflict}) DO UPDATE SET {changing}) "
            f"SELECT n FROM existing")
        return cur.fetchone()[0]
