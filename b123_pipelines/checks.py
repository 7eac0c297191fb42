"""Data contracts, proven against the source on every sync.

Each check returns a dagster AssetCheckResult whose metadata names what differs, so a failure
can be acted on from the Dagster UI without a query. A check is attached to a system's graph only
where its connector declares what the check needs (`Capabilities`). Severity as the data team reads
it: ERROR checks are blocking and stop the update before the figures change; WARN checks report a
difference without stopping it.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue, PreviewWarning
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.connectors.base import Connector
from b123_pipelines.errors import system_label
from b123_pipelines.sync import ACTUALS_KEY

DRAFT_EXCLUSION = "draft_exclusion"
ROW_COUNTS = "row_counts"
ACTUALS_MATCH = "actuals_match_transactions"
RECONCILIATION = "reconciliation"

MAX_LISTED = 20
BLOCKING = frozenset({DRAFT_EXCLUSION, ROW_COUNTS, ACTUALS_MATCH})
FOR_PHASE = {
    "accounts": (), "dimensions": (),
    "transactions": (DRAFT_EXCLUSION, ROW_COUNTS),
    "budget_actuals": (ACTUALS_MATCH, RECONCILIATION),
}


def specs(connector: type[Connector], keys: dict[str, AssetKey], partitions_def=None) -> list[AssetCheckSpec]:
    """The checks this system can run, each on its phase's asset, evaluated per tenant partition."""
    label, can = connector.label, connector.capabilities
    candidates = [
        (can.draft_lines, DRAFT_EXCLUSION, "transactions", "No line of a draft journal (kassekladde) was loaded."),
        (True, ROW_COUNTS, "transactions", "Fetched = loaded this run" + (
            "; warehouse count = the source's count." if can.source_count else ".")),
        (True, ACTUALS_MATCH, "budget_actuals", "Actuals equal transactions summed, to the øre."),
        (can.source_totals, RECONCILIATION, "budget_actuals",
         f"Per account and year, equal to {label}'s own totals (WARN: reported, does not stop the update)."),
    ]
    # Partitioned checks are a preview in Dagster 1.13: its warning would reach every CLI user's stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [AssetCheckSpec(name, asset=keys[phase], description=description, blocking=name in BLOCKING,
                               partitions_def=partitions_def)
                for supported, name, phase, description in candidates if supported]


def _listing(rows: list[str]) -> MetadataValue:
    shown = rows[:MAX_LISTED] + ([f"... and {len(rows) - MAX_LISTED} more"] if len(rows) > MAX_LISTED else [])
    return MetadataValue.md("\n".join(f"- {r}" for r in shown) or "none")


def draft_exclusion(engine: Engine, connector: Connector) -> AssetCheckResult:
    """No line of a draft journal (kassekladde) is among the loaded transactions.

    A draft's voucher number is taken from the number series it will be booked under, so a loaded
    transaction with a draft's voucher, account, date and amount is that draft.
    """
    tx = t.transactions.c
    drafts = list(connector.draft_lines())
    found = []
    with engine.connect() as conn:
        for d in drafts:
            hit = conn.execute(sa.select(tx.entry_id).where(
                tx.tenant_id == connector.tenant_id, tx.period == d.posting_date.replace(day=1),
                tx.voucher == d.voucher,
                tx.account_number == d.account_number, tx.posting_date == d.posting_date,
                tx.amount == d.amount).limit(1)).scalar()
            if hit is not None:
                found.append(f"entry {hit}: voucher {d.voucher}, account {d.account_number}, "
                             f"{d.posting_date}, {d.amount}")
    return AssetCheckResult(
        check_name=DRAFT_EXCLUSION, passed=not found,
        description=None if not found else
        f"{len(found)} line(s) of a draft journal were loaded as posted figures",
        metadata={"draft_lines_in_source": len(drafts), "drafts_loaded": len(found),
                  "loaded_drafts": _listing(found)},
    )


def row_counts(engine: Engine, connector: Connector, run_id: str, fetched: int, cursor: dict | None) -> AssetCheckResult:
    """Fetched this run = loaded this run, and the warehouse holds what the source counts."""
    tx = t.transactions.c
    # Every row this run wrote is in a month marked for recomputation in the same transaction,
    # so counting them reads those months only, not the tenant's whole history.
    touched = sa.select(t.dirty_periods.c.period).where(t.dirty_periods.c.tenant_id == connector.tenant_id)
    with engine.connect() as conn:
        warehouse = conn.execute(sa.select(sa.func.count()).where(tx.tenant_id == connector.tenant_id)).scalar()
        loaded = conn.execute(sa.select(sa.func.count()).where(
            tx.tenant_id == connector.tenant_id, tx.period.in_(touched), tx.loaded_run_id == run_id)).scalar()
    counted = connector.capabilities.source_count
    source = (connector.count_entries(cursor) if cursor else 0) if counted else None
    problems = ([f"fetched {fetched}, loaded {loaded}"] if fetched != loaded else []) + (
        [f"warehouse holds {warehouse} where the source counts {source}"] if counted and warehouse != source else [])
    return AssetCheckResult(
        check_name=ROW_COUNTS, passed=not problems, description="; ".join(problems) or None,
        metadata={"fetched_this_run": fetched, "loaded_this_run": loaded, "in_warehouse": warehouse,
                  "dagster/row_count": warehouse, **({"in_source": source} if counted else {})},
    )


def _sums(conn, table, tenant: str, periods: list[dt.date]) -> dict[tuple, Decimal]:
    c = table.c
    rows = conn.execute(sa.select(*[c[k] for k in ACTUALS_KEY], sa.func.sum(c.amount)).where(
        c.tenant_id == tenant, c.period.in_(periods)).group_by(*[c[k] for k in ACTUALS_KEY]))
    return {tuple(r[:-1]): r[-1] for r in rows}


def actuals_match_transactions(engine: Engine, tenant: str, periods: list[dt.date]) -> AssetCheckResult:
    """budget_actuals equals the transactions summed per account, month and dimensions, to the øre.

    Compared group by group for the months this update recomputed (the others did not change), and
    for the whole tenant by number of entries.
    """
    tx, ba = t.transactions.c, t.budget_actuals.c
    with engine.connect() as conn:
        expected = _sums(conn, t.transactions, tenant, periods)
        actual = _sums(conn, t.budget_actuals, tenant, periods)
        entries = conn.execute(sa.select(sa.func.count()).where(tx.tenant_id == tenant)).scalar()
        counted = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(ba.entry_count), 0)).where(
            ba.tenant_id == tenant)).scalar()
    differ = [f"account {k[0]}, {k[1]:%Y-%m}, dimensions {'/'.join(k[2:]) or '-'}: "
              f"transactions {expected.get(k, Decimal(0))}, actuals {actual.get(k, Decimal(0))}"
              for k in sorted(set(expected) | set(actual), key=str) if expected.get(k) != actual.get(k)]
    if entries != counted:
        differ.append(f"the tenant has {entries} transactions; the actuals count {counted}")
    return AssetCheckResult(
        check_name=ACTUALS_MATCH, passed=not differ,
        description=None if not differ else f"{len(differ)} differences between actuals and transactions",
        metadata={"months_compared": len(periods), "groups": len(expected),
                  "transactions_in_those_months": str(sum(expected.values(), Decimal(0))),
                  "actuals_in_those_months": str(sum(actual.values(), Decimal(0))),
                  "entries": entries, "entries_in_actuals": counted, "differences": _listing(differ)},
    )


def _warehouse_totals(conn, tenant: str, start: dt.date, end: dt.date):
    """Per account over [start, end]: from budget_actuals when the range is whole months (proven
    equal to the transactions by actuals_match_transactions, and far smaller), else from transactions."""
    whole_months = start.day == 1 and (end + dt.timedelta(days=1)).day == 1
    table = t.budget_actuals if whole_months else t.transactions
    c = table.c
    span = c.period.between(start, end) if whole_months else c.posting_date.between(start, end)
    return conn.execute(sa.select(c.account_number, sa.func.sum(c.amount))
                        .where(c.tenant_id == tenant, span).group_by(c.account_number))


def reconciliation(engine: Engine, connector: Connector) -> AssetCheckResult:
    """Per account and accounting year, the warehouse's sum equals the source's own total."""
    source: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    ranges = {}
    for total in connector.period_totals():
        source[(total.label, total.account_number)] += total.total
        ranges[total.label] = (total.from_date, total.to_date)
    warehouse: dict[tuple[str, str], Decimal] = {}
    with engine.connect() as conn:
        for label, (start, end) in ranges.items():
            for account, amount in _warehouse_totals(conn, connector.tenant_id, start, end):
                warehouse[(label, account)] = amount
    label_source = system_label(connector.system)
    differ = [f"account {account}, year {label}: {label_source} {source.get((label, account), Decimal(0))}, "
              f"budget123 {warehouse.get((label, account), Decimal(0))}"
              for label, account in sorted(set(source) | set(warehouse))
              if source.get((label, account), Decimal(0)) != warehouse.get((label, account), Decimal(0))]
    return AssetCheckResult(
        check_name=RECONCILIATION, passed=not differ, severity=AssetCheckSeverity.WARN,
        description=None if not differ else f"{len(differ)} account-years differ from the source's totals",
        metadata={"account_years": len(source), "differences": _listing(differ)},
    )
