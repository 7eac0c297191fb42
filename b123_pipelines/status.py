"""The update's status as the app shows it: one sync_runs row per update and its live log."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.db import now
from b123_pipelines.errors import redact


def _number(n: int, locale: str) -> str:
    text = f"{n:,}"
    return text.replace(",", ".") if locale == "da" else text


def _seconds(s: float, locale: str) -> str:
    text = f"{s:.1f}"
    return text.replace(".", ",") if locale == "da" else text


def status_message(locale: str, transactions: int, seconds: float, accounts_changed: int = 0,
                   dimensions_changed: int = 0) -> str:
    """E.g. 'Hentede 1.234 transaktioner på 3,2 sekunder' / 'Fetched 1,234 transactions in 3.2 seconds'."""
    n, s = _number(transactions, locale), _seconds(seconds, locale)
    if locale == "da":
        text = f"Hentede {n} {'transaktion' if transactions == 1 else 'transaktioner'} på {s} sekunder"
        extra = [f"{accounts_changed} {'konto' if accounts_changed == 1 else 'konti'} ændret"] if accounts_changed else []
        extra += [f"{dimensions_changed} {'dimension' if dimensions_changed == 1 else 'dimensioner'} ændret"] if dimensions_changed else []
    else:
        text = f"Fetched {n} {'transaction' if transactions == 1 else 'transactions'} in {s} seconds"
        extra = [f"{accounts_changed} {'account' if accounts_changed == 1 else 'accounts'} changed"] if accounts_changed else []
        extra += [f"{dimensions_changed} {'dimension' if dimensions_changed == 1 else 'dimensions'} changed"] if dimensions_changed else []
    return "; ".join([text, *extra])


def open_run(engine: Engine, run_id: str, tenant_id: str, system: str, trigger: str,
             user_id: str | None, full_refresh: bool) -> None:
    """Opens the update's row; each step calls it and only the first one writes."""
    with engine.begin() as conn:
        exists = conn.execute(sa.select(t.sync_runs.c.run_id).where(t.sync_runs.c.run_id == run_id)).first()
        if not exists:
            conn.execute(t.sync_runs.insert().values(
                run_id=run_id, tenant_id=tenant_id, system=system, trigger=trigger, user_id=user_id,
                full_refresh=full_refresh, started_at=now(), status="running",
            ))


def add_counts(engine: Engine, run_id: str, **counts: int) -> None:
    with engine.begin() as conn:
        col = t.sync_runs.c
        conn.execute(t.sync_runs.update().where(col.run_id == run_id)
                     .values({name: col[name] + value for name, value in counts.items()}))


def close_run(engine: Engine, run_id: str, status: str, locale: str,
              message: str | None = None) -> str:
    """Closes the row; on success the message is the localized status message."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.run_id == run_id)).mappings().one()
        finished = now()
        started = row["started_at"]
        if started.tzinfo is None:  # SQLite returns naive UTC
            started = started.replace(tzinfo=finished.tzinfo)
        seconds = (finished - started).total_seconds()
        if message is None:
            message = status_message(locale, row["transactions_fetched"], seconds,
                                     row["accounts_changed"], row["dimensions_changed"])
        conn.execute(t.sync_runs.update().where(t.sync_runs.c.run_id == run_id).values(
            status=status, finished_at=finished, duration_seconds=seconds, message=message))
    return message


@dataclass
class LiveLog:
    """Lines the app shows while the update runs; each is committed as it is written."""

    engine: Engine
    run_id: str
    tenant_id: str
    locale: str = "da"
    secrets: list[str] = field(default_factory=list)
    echo: Callable[[str], None] = logging.getLogger("b123").info

    def tr(self, da: str, en: str) -> str:
        return da if self.locale == "da" else en

    def line(self, phase: str, message: str, page: int | None = None, pages_total: int | None = None,
             rows_so_far: int | None = None, conn=None) -> None:
        """Writes a line; pass `conn` to commit it together with the data it describes."""
        message = redact(message, self.secrets)
        values = dict(run_id=self.run_id, tenant_id=self.tenant_id, logged_at=now(), phase=phase,
                      message=message, page=page, pages_total=pages_total, rows_so_far=rows_so_far)
        if conn is not None:
            conn.execute(t.sync_log.insert().values(values))
        else:
            with self.engine.begin() as own:
                own.execute(t.sync_log.insert().values(values))
        self.echo(f"[{phase}] {message}")
