"""The figures as a budget owner reads them: actuals per account and month, from the warehouse.

Amounts stay Decimal throughout: pandas holds them as Python objects (dtype object), never floats.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t

if TYPE_CHECKING:
    import pandas as pd


def month_totals(conn, tenant_id: str, months: list[dt.date]) -> list[tuple[dt.date, Decimal, int]]:
    """(month, total, entries) for each of `months`, from budget_actuals."""
    ba = t.budget_actuals.c
    rows = conn.execute(sa.select(ba.period, sa.func.sum(ba.amount), sa.func.sum(ba.entry_count))
                        .where(ba.tenant_id == tenant_id, ba.period.in_(months))
                        .group_by(ba.period).order_by(ba.period))
    found = {period: (amount, int(entries)) for period, amount, entries in rows}
    return [(m, *found.get(m, (Decimal("0.00"), 0))) for m in sorted(months)]


def actuals_pivot(engine: Engine, tenant_id: str, year: int | None = None,
                  dimension: str | None = None) -> pd.DataFrame:
    """Accounts × months of one tenant's actuals, optionally one year and one dimension value.

    `dimension` is a dimension value's code, matched in whichever of dimension_1..3 carries it.
    Account names come from the chart of accounts; a total row and column close the table.
    """
    ba, acc = t.budget_actuals.c, t.accounts.c
    query = (sa.select(ba.account_number, acc.name, ba.period, ba.amount)
             .select_from(t.budget_actuals.outerjoin(
                 t.accounts, sa.and_(acc.tenant_id == ba.tenant_id, acc.account_number == ba.account_number)))
             .where(ba.tenant_id == tenant_id))
    if year is not None:
        query = query.where(ba.period.between(dt.date(year, 1, 1), dt.date(year, 12, 1)))
    if dimension is not None:
        query = query.where(sa.or_(ba.dimension_1 == dimension, ba.dimension_2 == dimension,
                                   ba.dimension_3 == dimension))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    import pandas as pd  # here: every update imports this module, and pandas is 40 MB and 0.3 s

    frame = pd.DataFrame(rows, columns=["account", "name", "period", "amount"])
    if frame.empty:
        return frame
    frame["account"] = frame["account"] + " " + frame["name"].fillna("")
    frame["month"] = [f"{p:%Y-%m}" for p in frame["period"]]
    return pd.pivot_table(frame, index="account", columns="month", values="amount", aggfunc=_exact_sum,
                          fill_value=Decimal("0.00"), margins=True, margins_name="Total",
                          sort=True)


def _exact_sum(values) -> Decimal:
    return sum(values, Decimal("0.00"))
