"""The update's status as the app shows it: one sync_runs row per update and its live log."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.db import now, utc
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
             user_id: str | None, full_refresh: bool, serve_requests: bool = True) -> None:
    """Opens the update's row (a row already there, e.g. closed by a busy-tenant refusal, is kept)."""
    with engine.begin() as conn:
        exists = conn.execute(sa.select(t.sync_runs.c.run_id).where(t.sync_runs.c.run_id == run_id)).first()
        if not exists:
            conn.execute(t.sync_runs.insert().values(
                run_id=run_id, tenant_id=tenant_id, system=system, trigger=trigger, user_id=user_id,
                full_refresh=full_refresh, started_at=now(), status="running",
            ))
        if not serve_requests:
            return
        # Refresh requests waiting for an update of this tenant are served by this one.
        requests = t.sync_requests.c
        conn.execute(t.sync_requests.update().where(
            requests.tenant_id == tenant_id, requests.state == "queued",
            sa.or_(requests.run_id.is_(None), requests.run_id == run_id),
        ).values(state="running", run_id=run_id))


def calls_since(engine: Engine, tenant_id: str, since) -> int:
    """API calls the tenant's updates started since `since` spent, by their rows."""
    runs = t.sync_runs.c
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.coalesce(sa.func.sum(runs.api_calls), 0)).where(
            runs.tenant_id == tenant_id, runs.started_at >= since)).scalar()


def add_counts(engine: Engine, run_id: str, **counts: int) -> None:
    with engine.begin() as conn:
        col = t.sync_runs.c
        conn.execute(t.sync_runs.update().where(col.run_id == run_id)
                     .values({name: col[name] + value for name, value in counts.items()}))


def close_run(engine: Engine, run_id: str, status: str, locale: str,
              message: str | None = None, api_calls: int = 0) -> str:
    """Closes the row; on success the message is the localized status message."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.run_id == run_id)).mappings().one()
        finished = now()
        seconds = (finished - utc(row["started_at"])).total_seconds()
        if message is None:
            message = status_message(locale, row["transactions_fetched"], seconds,
                                     row["accounts_changed"], row["dimensions_changed"])
        conn.execute(t.sync_runs.update().where(t.sync_runs.c.run_id == run_id).values(
            status=status, finished_at=finished, duration_seconds=seconds, message=message,
            api_calls=api_calls))
        _close_requests(conn, run_id, status, message)
        _record_health(conn, row["tenant_id"], status == "succeeded", finished)
    return message


def close_failed_run(engine: Engine, run_id: str, tenant_id: str, system: str, trigger: str,
                     user_id: str | None, message: str) -> None:
    """For a run that failed outside our phases' own handling, e.g. before any phase ran."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.sync_runs.c.status).where(t.sync_runs.c.run_id == run_id)).first()
        locale = conn.execute(sa.select(t.tenants.c.locale).where(t.tenants.c.tenant_id == tenant_id)).scalar()
    if row is not None and row.status != "running":
        return  # a phase closed it already, with a better message
    if locale is None:
        return  # the tenant was removed: nothing of it is kept, not even this run
    if row is None:
        open_run(engine, run_id, tenant_id, system, trigger, user_id, False)
    close_run(engine, run_id, "failed", locale, message)


def _close_requests(conn, run_id: str, status: str, message: str) -> None:
    requests = t.sync_requests.c
    conn.execute(t.sync_requests.update().where(
        requests.run_id == run_id, requests.state.in_(("queued", "running"))
    ).values(state="done" if status == "succeeded" else "failed", reason=message))


def _record_health(conn, tenant_id: str, ok: bool, at) -> None:
    """Consecutive failures, for the automatic triggers' back-off (see triggers.py)."""
    health = t.sync_health.c
    row = conn.execute(sa.select(t.sync_health).where(health.tenant_id == tenant_id)).first()
    failures = 0 if ok else (row.consecutive_failures if row else 0) + 1
    values = dict(consecutive_failures=failures,
                  last_success_at=at if ok else (row.last_success_at if row else None),
                  last_failure_at=(row.last_failure_at if row else None) if ok else at)
    if row:
        conn.execute(t.sync_health.update().where(health.tenant_id == tenant_id).values(values))
    else:
        conn.execute(t.sync_health.insert().values(tenant_id=tenant_id, **values))


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
             rows_so_far: int | None = None, conn=None, echo: bool = True) -> None:
        """Writes a line; pass `conn` to commit it together with the data it describes, and
        `echo=False` to keep it out of Dagster's log (each echo is an event in its storage)."""
        message = redact(message, self.secrets)
        values = dict(run_id=self.run_id, tenant_id=self.tenant_id, logged_at=now(), phase=phase,
                      message=message, page=page, pages_total=pages_total, rows_so_far=rows_so_far)
        if conn is not None:
            conn.execute(t.sync_log.insert().values(values))
        else:
            with self.engine.begin() as own:
                own.execute(t.sync_log.insert().values(values))
        if echo:
            self.echo(f"[{phase}] {message}")
