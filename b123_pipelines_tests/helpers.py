"""Reading the warehouse back, for assertions; and a sync killed mid-way, to prove it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa

from b123_pipelines import tables as t


def warehouse_sums(engine, tenant_id: str, table=t.transactions) -> dict:
    """Sum of amount per (account number as int, first of month), like the emulator's truth."""
    sums: dict = defaultdict(Decimal)
    with engine.connect() as conn:
        for account, period, amount in conn.execute(
            sa.select(table.c.account_number, table.c.period, sa.func.sum(table.c.amount))
            .where(table.c.tenant_id == tenant_id).group_by(table.c.account_number, table.c.period)
        ):
            sums[(int(account), period)] += amount
    return dict(sums)


def nonzero(sums: dict) -> dict:
    return {k: v for k, v in sums.items() if v != 0}


def count(engine, table, **where) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return conn.execute(query).scalar()


def entry_ids(engine, tenant_id: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(int(x) for x in conn.execute(
            sa.select(t.transactions.c.entry_id).where(t.transactions.c.tenant_id == tenant_id)).scalars())


def last_run(engine, tenant_id: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.tenant_id == tenant_id)
                            .order_by(t.sync_runs.c.started_at.desc()).limit(1)).mappings().first()


def entries_requests(emu) -> list:
    return [r for r in emu.requests if r.path.endswith("/entries") and "/journals/" not in r.path]


def dimension_sums(engine, tenant_id: str, table=t.transactions) -> dict:
    """Sum of amount per (dimension, value code), through the slots dimension_values declares."""
    dims, c = t.dimension_values.c, table.c
    sums: dict = defaultdict(Decimal)
    with engine.connect() as conn:
        slots = dict(conn.execute(sa.select(dims.slot, dims.dimension).where(
            dims.tenant_id == tenant_id, dims.slot.is_not(None)).distinct()).all())
        for slot, dimension in slots.items():
            column = c[f"dimension_{slot}"]
            for code, amount in conn.execute(sa.select(column, sa.func.sum(c.amount)).where(
                    c.tenant_id == tenant_id, column != "").group_by(column)):
                sums[(dimension, code)] += amount
    return dict(sums)


def live_progress(engine, tenant_id: str):
    """The latest page line of the tenant's live log, while an update runs."""
    log = t.sync_log.c
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_log).where(log.tenant_id == tenant_id, log.page.is_not(None))
                            .order_by(log.line_id.desc()).limit(1)).mappings().first()


def kill_sync_after(engine, tenant_id: str, rows: int, timeout: float = 120):
    """Runs `b123 sync TENANT` in a process of its own and SIGKILLs it once `rows` entries are
    committed; returns the live log's last page line."""
    sync = subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", tenant_id],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up = time.monotonic() + timeout
    while not (progress := live_progress(engine, tenant_id)) or progress["rows_so_far"] < rows:
        assert sync.poll() is None, "the sync ended before it could be killed"
        assert time.monotonic() < give_up, "the sync did not get far enough in time"
        time.sleep(0.05)
    sync.send_signal(signal.SIGKILL)
    sync.wait()
    return live_progress(engine, tenant_id)


def vouchers(engine, tenant_id: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.transactions.c.voucher).where(
            t.transactions.c.tenant_id == tenant_id)).scalars())


def latest_check_status(asset: list[str], check: str) -> str:
    """SUCCEEDED or FAILED: the latest execution of an asset check on the current Dagster instance."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    key = AssetCheckKey(AssetKey(asset), check)
    return DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key([key])[key].status.value


def wait_for_pages(engine, sync, pages: int = 1):
    """Waits until the sync process `sync` has committed `pages` pages of entries; returns that
    page's live log line (run_id, pages_total, ...)."""
    deadline = time.monotonic() + 120
    while True:
        assert sync.poll() is None, f"the sync ended early: {sync.communicate()}"
        assert time.monotonic() < deadline, "the sync made no progress"
        with engine.connect() as conn:
            line = conn.execute(sa.select(t.sync_log).where(t.sync_log.c.page >= pages).limit(1)).mappings().first()
        if line:
            return line
        time.sleep(0.05)


def overlapping(requests) -> bool:
    """Whether two of the emulator's recorded requests were being served at one time."""
    spans = sorted((r.started, r.ended) for r in requests)
    return any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
