"""Figures a person would rather look at: month totals on the materialization, the accounts × months pivot."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from b123_pipelines import tables as t
from b123_pipelines.figures import actuals_pivot
from b123_pipelines.runner import run_sync


def _truth_by_month(emulator) -> dict[str, Decimal]:
    months: dict[str, Decimal] = defaultdict(Decimal)
    for (_, month), amount in emulator.sums_by_account_month().items():
        months[f"{month:%Y-%m}"] += amount
    return months


def test_the_materialization_shows_the_recomputed_months_totals(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok

    event = DagsterInstance.get().get_latest_materialization_event(AssetKey(["economic", "budget_actuals"]))
    table = event.asset_materialization.metadata["month_totals"].value
    shown = {record.data["month"]: Decimal(record.data["total"]) for record in table.records}
    truth = _truth_by_month(emulator)
    assert shown and all(truth[month] == total for month, total in shown.items())
    assert len(shown) == min(36, len(truth))


def test_the_pivot_is_accounts_by_months_exact_with_totals(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    year = int(emulator.years()[-1])

    pivot = actuals_pivot(engine, "acme", year=year)

    truth = {(account, f"{month:%Y-%m}"): amount for (account, month), amount in emulator.sums_by_account_month().items()
             if month.year == year}
    for (account, month), amount in truth.items():
        row = next(r for r in pivot.index if r.split(" ")[0] == str(account))
        assert pivot.loc[row, month] == amount and isinstance(pivot.loc[row, month], Decimal)
    assert set(pivot.columns) - {"Total"} == {month for _, month in truth}
    assert pivot.loc["Total", "Total"] == sum(truth.values(), Decimal(0))
    with engine.connect() as conn:
        in_department = conn.execute(sa.select(sa.func.sum(t.transactions.c.amount)).where(
            t.transactions.c.tenant_id == "acme", t.transactions.c.dimension_1 == "1",
            sa.extract("year", t.transactions.c.posting_date) == year)).scalar()
    department = actuals_pivot(engine, "acme", year=year, dimension="1")
    assert in_department and department.loc["Total", "Total"] == in_department
    assert set(department.index) < set(pivot.index)


def test_b123_actuals_prints_the_pivot(env, engine, emulator, tenant, capsys):
    from b123_pipelines.cli import main

    assert run_sync("acme", echo=None).ok
    year = int(emulator.years()[-1])
    capsys.readouterr()

    assert main(["actuals", "acme", "--year", str(year)]) == 0

    out = capsys.readouterr().out
    total = sum((a for (_, m), a in emulator.sums_by_account_month().items() if m.year == year), Decimal(0))
    header, *rows = out.splitlines()
    assert f"{year}-01" in header and "Total" in header
    assert rows[-1].split()[0] == "Total" and rows[-1].split()[-1] == str(total)
    assert main(["actuals", "acme", "--year", "1999"]) == 0
    assert "no actuals in 1999" in capsys.readouterr().out
