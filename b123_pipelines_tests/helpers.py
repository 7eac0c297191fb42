"""Reading the warehouse back, for assertions."""

from __future__ import annotations

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
