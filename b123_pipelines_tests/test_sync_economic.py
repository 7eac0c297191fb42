"""e-conomic end to end: emulator over real HTTP → Dagster job → warehouse, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from b123_pipelines import tables as t
from b123_pipelines.runner import run_sync
from b123_pipelines.sync import load_cursor
from b123_pipelines_tests.helpers import (
    count,
    entries_requests,
    entry_ids,
    last_run,
    nonzero,
    warehouse_sums,
)


def test_full_sync_loads_every_posted_entry_exactly(env, engine, emulator, tenant):
    outcome = run_sync("acme", echo=None)

    assert outcome.ok, outcome.message
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]
    truth = nonzero(emulator.sums_by_account_month())
    assert nonzero(warehouse_sums(engine, "acme")) == truth
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == truth
    assert all(isinstance(v, Decimal) for v in truth.values())


def test_status_message_and_live_log(env, engine, emulator, tenant):
    outcome = run_sync("acme", echo=None)

    run = last_run(engine, "acme")
    n = emulator.entry_count()
    assert run["status"] == "succeeded" and run["transactions_fetched"] == n
    assert run["message"].startswith(f"Hentede {n:,}".replace(",", ".") + " transaktioner på ")
    assert run["message"] == outcome.message and run["duration_seconds"] > 0
    with engine.connect() as conn:
        lines = conn.execute(sa.select(t.sync_log).where(t.sync_log.c.run_id == run["run_id"])
                             .order_by(t.sync_log.c.line_id)).mappings().all()
    phases = [line["phase"] for line in lines]
    assert phases.index("accounts") < phases.index("dimensions") < phases.index("transactions") < phases.index("budget_actuals")
    pages = [line for line in lines if line["page"]]
    # A line per stored batch (pages that arrived together are stored together), in order.
    assert [p["page"] for p in pages] == sorted({p["page"] for p in pages}) and pages[0]["page"] >= 1
    assert [p["rows_so_far"] for p in pages] == sorted({p["rows_so_far"] for p in pages})
    assert pages[-1]["rows_so_far"] == n and pages[-1]["page"] == pages[-1]["pages_total"]


def test_second_sync_fetches_only_new_entries_and_chart_changes(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    cursor = load_cursor(engine, "acme")
    emulator.clear_requests()
    new_numbers = emulator.book_entries(6) + emulator.book_entries(4, year=emulator.years()[0])
    accounts = {a["accountNumber"]: a for a in emulator.accounts()}
    renamed = next(n for n, a in accounts.items() if a["accountType"] == "profitAndLoss")
    emulator.rename_account(renamed, "Omdøbt konto")
    moved = next(n for n, a in accounts.items() if a["accountType"] == "status" and n != renamed)
    emulator.renumber_account(moved, 99001)
    unused = 98001
    emulator.add_account(unused, "Ubrugt konto")
    assert run_sync("acme", echo=None).ok
    emulator.delete_account(unused)

    outcome = run_sync("acme", echo=None)

    assert outcome.ok, outcome.message
    run = last_run(engine, "acme")
    assert run["transactions_fetched"] == 0  # the third sync only saw the deletion
    with engine.connect() as conn:
        second = conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.tenant_id == "acme")
                              .order_by(t.sync_runs.c.started_at)).mappings().all()[1]
    assert second["transactions_fetched"] == len(new_numbers) == second["transactions_new"]
    # Every entries request of the second sync asked only for entries above the stored cursor.
    for request in entries_requests(emulator):
        year = request.path.split("/")[2].replace("_6_", "/")
        if request.query.get("pagesize") != "1" and year in cursor["years"]:
            assert request.query["filter"].startswith("entryNumber$gt:")
            assert int(request.query["filter"].split(":")[1].split("$")[0]) >= cursor["years"][year]
    with engine.connect() as conn:
        changes = {(c["change"], c["account_number"], c["old_account_number"])
                   for c in conn.execute(sa.select(t.account_changes).where(
                       t.account_changes.c.tenant_id == "acme")).mappings()}
    assert ("renamed", str(renamed), None) in changes
    assert ("moved", "99001", str(moved)) in changes
    assert ("deleted", "98001", None) in changes
    assert nonzero(warehouse_sums(engine, "acme")) == nonzero(emulator.sums_by_account_month())
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())


def test_actuals_recompute_only_touched_months(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    latest = emulator.years()[-1]
    emulator.book_entries(2, year=latest)
    touched = {dt.date.fromisoformat(e["date"]).replace(day=1) for e in emulator.posted_entries()
               if e["entryNumber"] > max(entry_ids(engine, "acme"))}

    run_sync("acme", echo=None)

    run = last_run(engine, "acme")
    from dagster import AssetKey, DagsterInstance

    instance = DagsterInstance.get()
    event = instance.get_latest_materialization_event(AssetKey(["economic", "budget_actuals"]))
    assert event.run_id == run["run_id"]
    months = event.asset_materialization.metadata["months"].value
    assert months == ", ".join(f"{m:%Y-%m}" for m in sorted(touched))


def test_duplicates_across_page_boundaries_are_dropped(env, engine, emulator, tenant):
    emulator.faults.repeat_boundary_entry = True

    assert run_sync("acme", echo=None).ok

    assert last_run(engine, "acme")["transactions_fetched"] == emulator.entry_count()
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]


def test_entries_booked_while_paging_are_neither_lost_nor_doubled(env, engine, emulator, tenant):
    emulator.faults.book_while_paging = (1, 6)

    assert run_sync("acme", echo=None).ok
    assert run_sync("acme", echo=None).ok

    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())


def test_rate_limits_and_server_errors_are_ridden_out(env, engine, emulator, tenant):
    emulator.faults.rate_limit(3, retry_after=1)
    assert run_sync("acme", echo=None).ok
    emulator.book_entries(4)
    emulator.faults.rate_limit(3, retry_after=None)
    emulator.faults.server_errors(3, status=503)

    outcome = run_sync("acme", echo=None)

    assert outcome.ok, outcome.message
    statuses = [r.status for r in emulator.requests]
    assert statuses.count(429) >= 6 and statuses.count(503) >= 3
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]


def test_full_refresh_retires_rows_the_source_no_longer_has(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    with engine.begin() as conn:
        conn.execute(t.transactions.insert().values(
            tenant_id="acme", entry_id="999999", account_number=str(emulator.accounts()[5]["accountNumber"]),
            posting_date=dt.date(2025, 3, 3), period=dt.date(2025, 3, 1), amount=Decimal("12.34"),
            currency="DKK", amount_in_currency=Decimal("12.34"), loaded_run_id="stray"))
        conn.execute(t.dirty_periods.insert().values(tenant_id="acme", period=dt.date(2025, 3, 1)))

    assert run_sync("acme", full=True, echo=None).ok

    assert 999999 not in entry_ids(engine, "acme")
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())
    assert last_run(engine, "acme")["full_refresh"]


def test_drafts_booked_between_syncs_arrive_as_posted_entries(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    vouchers = {str(d["voucher"]["voucherNumber"]) for d in emulator.draft_entries()}
    booked = emulator.book_drafts()

    assert run_sync("acme", echo=None).ok

    assert last_run(engine, "acme")["transactions_fetched"] == len(booked)
    with engine.connect() as conn:
        loaded = set(conn.execute(sa.select(t.transactions.c.voucher).where(
            t.transactions.c.entry_id.in_([str(n) for n in booked]))).scalars())
    assert loaded == vouchers
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())
