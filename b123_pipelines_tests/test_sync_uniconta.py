"""Uniconta end to end: the Uniconta emulator over real HTTPS → Dagster job → warehouse, on SQLite and
PostgreSQL. A small company (2,400 posted lines) so the whole file stays quick; where a test needs
many pages it lowers the emulator's page size, never the connector's $top."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa
from b123_emulators.uniconta import UnicontaEmulator
from dagster import AssetKey, DagsterInstance

from b123_pipelines import tables as t
from b123_pipelines.runner import run_sync
from b123_pipelines.sync import load_cursor
from b123_pipelines.tenants import add_tenant, get_tenant, store_credentials
from b123_pipelines_tests.helpers import (
    dimension_sums,
    entry_ids,
    kill_sync_after,
    last_run,
    latest_check_status,
    nonzero,
    overlapping,
    vouchers,
    warehouse_sums,
)

ENTRIES = 2400
PASSWORD = "uniconta-pw-SENTINEL-4"
WHO = "Tenant 'uni' (Uniconta)"
SQLITE = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
# Every update reads these once besides the posted lines: the chart of accounts, the company (its
# dimension labels), the three dimensions in use, the draft journal (the draft_exclusion check).
ONCE_EACH = ["GLAccountClient", "CompanyClient", "GLDimType1Client", "GLDimType2Client", "GLDimType3Client",
             "GLDailyJournalLineClient"]


@pytest.fixture
def uni(monkeypatch):
    with UnicontaEmulator(entries=ENTRIES, seed=11, password=PASSWORD, journal_lines=2) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)  # trust its certificate, the standard way
        yield emu


@pytest.fixture
def tenant(engine, vault, uni):
    return add_tenant(engine, vault, "uni", "uniconta", "Uni ApS", uni.connection())


def calls(uni) -> Counter:
    """Calls per entity, as the emulator saw them."""
    return Counter(r.path.rsplit("/", 1)[-1] for r in uni.requests)


def trans_requests(uni) -> list:
    return [r for r in uni.requests if r.path.endswith("/GLTransClient")]


def exact(engine, uni) -> None:
    assert entry_ids(engine, "uni") == uni.row_ids()
    truth = nonzero(uni.sums_by_account_month())
    assert nonzero(warehouse_sums(engine, "uni")) == truth
    assert nonzero(warehouse_sums(engine, "uni", t.budget_actuals)) == truth
    assert dimension_sums(engine, "uni") == uni.sums_by_dimension()
    assert dimension_sums(engine, "uni", t.budget_actuals) == uni.sums_by_dimension()


def latest_metadata(phase: str) -> dict:
    event = DagsterInstance.get().get_latest_materialization_event(AssetKey(["uniconta", phase]))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_full_sync_is_exact_per_account_month_and_dimension_value_in_few_calls(env, engine, uni, tenant):
    uni.faults.latency = 0.2  # a far-away API
    outcome = run_sync("uni", echo=None)

    assert outcome.ok, outcome.message
    exact(engine, uni)
    assert all(isinstance(v, Decimal) for v in uni.sums_by_account_month().values())
    assert {d for d, _ in uni.sums_by_dimension()} == {"Afdeling", "Projekt", "Formål"}
    with engine.connect() as conn:
        slots = dict(conn.execute(sa.select(t.dimension_values.c.dimension, t.dimension_values.c.slot)
                                  .where(t.dimension_values.c.tenant_id == "uni").distinct()).all())
        blocked = set(conn.execute(sa.select(t.dimension_values.c.code).where(t.dimension_values.c.blocked)).scalars())
    assert slots == {"Afdeling": 1, "Projekt": 2, "Formål": 3}
    assert blocked == {"500", "P0990"}
    # N/1,000 calls, rounded up, six more, and at most two for reading side by side: the first
    # page by RowId, the newest RowId, then windows of 1,000 by $skip below it, two at once (the
    # last one's neighbour may be asked while it is on its way); no count, nothing twice.
    pages = math.ceil(ENTRIES / 1000)
    spent = calls(uni)["GLTransClient"]
    assert pages + 1 <= spent <= pages + 2
    assert calls(uni) == Counter({**dict.fromkeys(ONCE_EACH, 1), "GLTransClient": spent})
    ids = uni.row_ids()
    first, newest, *windows = trans_requests(uni)
    assert "$filter" not in first.query and first.query["$orderby"] == "RowId" and first.query["$top"] == "1000"
    assert newest.query == {"$orderby": "RowId desc", "$top": "1"}
    assert {w.query["$filter"] for w in windows} == {f"RowId gt {ids[999]} and RowId le {ids[-1]}"}
    assert sorted(int(w.query["$skip"]) for w in windows)[:2] == [0, 999]  # each begins with the last one's last
    assert all(w.query["$orderby"] == "RowId" and w.query["$top"] == "1000" for w in windows)
    assert overlapping(windows)
    run = last_run(engine, "uni")
    assert run["transactions_fetched"] == ENTRIES
    assert run["api_calls"] == len(uni.requests) == spent + 6 == latest_metadata("transactions")["api_calls"]
    assert load_cursor(engine, "uni") == {"row_id": max(uni.row_ids())}
    # The live log counts pages without a total (a count would cost a call).
    with engine.connect() as conn:
        lines = conn.execute(sa.select(t.sync_log.c.message).where(
            t.sync_log.c.run_id == run["run_id"], t.sync_log.c.page.is_not(None))).scalars().all()
    # (Pages that arrive together are stored as one, so how many lines depends on timing.)
    assert lines[-1] == f"Side 3: {ENTRIES} posteringer" and all(" af " not in line for line in lines)
    # The journal's lines were read for the check, and none of them is among the figures.
    journal = {str(line["Voucher"]) for line in uni.journal_lines()}
    assert journal and not journal & vouchers(engine, "uni")
    assert latest_check_status(["uniconta", "transactions"], "draft_exclusion") == "SUCCEEDED"


def test_an_update_with_nothing_new_costs_a_handful_of_calls(env, engine, uni, tenant):
    assert run_sync("uni", echo=None).ok
    uni.clear_requests()

    outcome = run_sync("uni", echo=None)

    assert outcome.ok, outcome.message
    assert calls(uni) == Counter({**dict.fromkeys(ONCE_EACH, 1), "GLTransClient": 1})
    assert [r.query["$filter"] for r in trans_requests(uni)] == [f"RowId gt {max(uni.row_ids())}"]
    run = last_run(engine, "uni")
    assert run["transactions_fetched"] == 0
    assert run["api_calls"] == len(uni.requests) == 7 == latest_metadata("transactions")["api_calls"]


def test_back_dated_postings_are_caught(env, engine, uni, tenant):
    assert run_sync("uni", echo=None).ok
    with engine.connect() as conn:
        latest = conn.execute(sa.select(sa.func.max(t.transactions.c.posting_date))).scalar()
    back_dated = dt.date(2024, 3, 5)
    assert back_dated.replace(day=1) < latest.replace(day=1)  # a cursor on the date would pass it by
    march = {k: v for k, v in warehouse_sums(engine, "uni", t.budget_actuals).items() if k[1] == dt.date(2024, 3, 1)}

    posted = uni.post(4, date=back_dated) + uni.post(2)
    outcome = run_sync("uni", echo=None)

    assert outcome.ok, outcome.message
    assert last_run(engine, "uni")["transactions_fetched"] == len(posted) == 6
    exact(engine, uni)
    with engine.connect() as conn:
        dates = conn.execute(sa.select(t.transactions.c.posting_date).where(
            t.transactions.c.entry_id.in_([str(r) for r in posted[:4]]))).scalars().all()
    assert dates == [back_dated] * 4
    assert {k: v for k, v in warehouse_sums(engine, "uni", t.budget_actuals).items()
            if k[1] == dt.date(2024, 3, 1)} != march


def test_drafts_are_never_loaded_and_posted_ones_arrive(env, engine, uni, tenant):
    assert run_sync("uni", echo=None).ok
    journal = {str(line["Voucher"]) for line in uni.journal_lines()}
    assert journal and not journal & vouchers(engine, "uni")

    posted = uni.post_journal()
    unposted = {str(line["Voucher"]) for line in uni.add_journal_lines(1)}
    outcome = run_sync("uni", echo=None)

    assert outcome.ok, outcome.message
    assert last_run(engine, "uni")["transactions_fetched"] == len(posted) == 2 * len(journal)
    assert journal <= vouchers(engine, "uni") and unposted and not unposted & vouchers(engine, "uni")
    exact(engine, uni)

    # A server that served its journal as posted lines (they carry no JournalPostedId) is refused.
    before = (entry_ids(engine, "uni"), warehouse_sums(engine, "uni", t.budget_actuals))
    uni.faults.leak_drafts = True
    leaked = run_sync("uni", echo=None)

    assert not leaked.ok and leaked.message.startswith(WHO)
    assert "no JournalPostedId" in leaked.message and "nothing from this page was loaded" in leaked.message
    assert (entry_ids(engine, "uni"), warehouse_sums(engine, "uni", t.budget_actuals)) == before


def test_spent_daily_calls_stop_the_update_at_once_keep_what_was_loaded_and_the_next_day_resumes(
        env, engine, uni, tenant):
    assert run_sync("uni", echo=None).ok
    before = warehouse_sums(engine, "uni", t.budget_actuals)
    loaded = entry_ids(engine, "uni")
    uni.page_size = 100
    new = uni.post(600)
    # The day's calls run out once the newest RowId is known: five calls before the posted lines
    # (accounts, company, three dimensions), the first page of 100, the newest RowId; the windows
    # of 100 then asked side by side are refused.
    uni.daily_quota = uni.calls_today() + 5 + 2
    resets = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=9)).replace(second=0, microsecond=0)
    uni.quota_reset_at = resets
    uni.clear_requests()

    started = time.monotonic()
    outcome = run_sync("uni", echo=None)
    took = time.monotonic() - started

    assert not outcome.ok
    assert outcome.message.startswith(WHO)
    for words in ("daily call limit", f"00{uni.company_id}/budget123", "5,000",
                  f"It resets at {resets:%Y-%m-%d %H:%M} UTC", "stopped at once", "resumes where this one stopped"):
        assert words in outcome.message, outcome.message
    assert PASSWORD not in outcome.message
    assert took < 30  # no waiting for tomorrow (the rest is Dagster's own bookkeeping)
    refused = [r.status for r in uni.requests].count(429)
    assert 1 <= refused <= 2  # once per call under way (two at once), none retried
    # The pages stored before the limit stay, with their cursor; the figures shown did not change.
    assert entry_ids(engine, "uni") == loaded + new[:100]
    assert load_cursor(engine, "uni") == {"row_id": new[99]}
    assert warehouse_sums(engine, "uni", t.budget_actuals) == before
    run = last_run(engine, "uni")
    assert run["status"] == "failed" and run["api_calls"] == len(uni.requests) == 5 + 2 + refused
    assert not get_tenant(engine, "uni").awaiting_credentials

    uni.new_day()
    uni.clear_requests()
    resumed = run_sync("uni", echo=None)

    assert resumed.ok, resumed.message
    assert trans_requests(uni)[0].query["$filter"] == f"RowId gt {new[99]}"
    assert last_run(engine, "uni")["transactions_fetched"] == 500
    exact(engine, uni)


def _wrong_password(uni, engine, vault):
    store_credentials(engine, vault, "uni", uni.connection(password="an-old-password"))
    return lambda: store_credentials(engine, vault, "uni", uni.connection())


def _no_rights(uni, engine, vault):
    uni.without_rights.add(uni.username)
    return uni.without_rights.clear


def _unknown_company(uni, engine, vault):
    store_credentials(engine, vault, "uni", uni.connection(company_id=99999))
    return lambda: store_credentials(engine, vault, "uni", uni.connection())


@SQLITE
@pytest.mark.parametrize("breaks, words, new_credentials", [
    (_wrong_password, ["refused the user '0040117/budget123' with the stored password", "HTTP 401",
                       "Store the user's current password"], True),
    (_no_rights, ["user 'budget123' logged in, but has no rights in company 40117", "HTTP 403",
                  "must give the user rights in the company"], False),
    (_unknown_company, ["has no company 99999", "HTTP 404", "Correct company_id"], False),
], ids=["wrong_password", "no_rights_in_the_company", "unknown_company"])
def test_a_refusal_says_which_keeps_what_was_loaded_and_the_fix_resumes(
        empty_database_url, env, engine, vault, uni, tenant, breaks, words, new_credentials):
    assert run_sync("uni", echo=None).ok
    before = (entry_ids(engine, "uni"), warehouse_sums(engine, "uni", t.budget_actuals))
    uni.post(4)
    fix = breaks(uni, engine, vault)

    outcome = run_sync("uni", echo=None)

    assert not outcome.ok and outcome.message.startswith(WHO), outcome.message
    for word in words:
        assert word in outcome.message, outcome.message
    assert PASSWORD not in outcome.message
    assert (entry_ids(engine, "uni"), warehouse_sums(engine, "uni", t.budget_actuals)) == before
    assert get_tenant(engine, "uni").awaiting_credentials is new_credentials

    fix()
    resumed = run_sync("uni", echo=None)

    assert resumed.ok, resumed.message
    assert last_run(engine, "uni")["transactions_fetched"] == 4
    exact(engine, uni)


@SQLITE
def test_unused_dimensions_are_never_read_and_dimensions_4_and_5_have_no_slot(
        empty_database_url, env, engine, vault, monkeypatch):
    labels = ("Afdeling", None, "Formål", "Område", "Medarbejder")
    with UnicontaEmulator(entries=400, seed=3, password=PASSWORD, dimensions=labels) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)
        add_tenant(engine, vault, "uni", "uniconta", "Uni ApS", emu.connection())

        assert run_sync("uni", echo=None).ok

        read = calls(emu)
        assert "GLDimType2Client" not in read
        assert all(read[f"GLDimType{n}Client"] == 1 for n in (1, 3, 4, 5))
        with engine.connect() as conn:
            slots = dict(conn.execute(sa.select(t.dimension_values.c.dimension, t.dimension_values.c.slot)
                                      .where(t.dimension_values.c.tenant_id == "uni").distinct()).all())
            second = set(conn.execute(sa.select(t.transactions.c.dimension_2).distinct()).scalars())
        assert slots == {"Afdeling": 1, "Formål": 3, "Område": None, "Medarbejder": None}
        assert second == {""}
        assert {d for d, _ in emu.sums_by_dimension()} == {"Afdeling", "Formål"}
        exact(engine, emu)


def test_a_sync_killed_mid_transactions_resumes_without_gap_or_duplicate(env, engine, uni, tenant):
    uni.page_size = 100
    uni.faults.page_delay = 0.3

    progress = kill_sync_after(engine, "uni", rows=500)

    partial = entry_ids(engine, "uni")
    assert 500 <= len(partial) < ENTRIES
    assert any("$skip" in r.query for r in trans_requests(uni))  # windows side by side were under way
    assert len(partial) == progress["rows_so_far"]  # the cursor moved with the rows
    assert load_cursor(engine, "uni") == {"row_id": partial[-1]}
    uni.faults.page_delay = 0

    assert run_sync("uni", echo=None).ok

    ids = entry_ids(engine, "uni")
    assert len(ids) == len(set(ids))
    exact(engine, uni)


def test_the_doctor_says_how_many_calls_are_left_today(env, engine, uni, tenant, capsys):
    from b123_pipelines.cli import main

    assert run_sync("uni", echo=None).ok
    spent = last_run(engine, "uni")["api_calls"]
    capsys.readouterr()

    main(["doctor", "uni"])

    line = next(line for line in capsys.readouterr().out.splitlines() if "API-kald tilbage i dag" in line)
    assert line.split()[0] == "ok" and f"{4000 - spent:,} af budget123's 4,000" in line, line


def test_windows_that_moved_under_the_sync_are_left_for_keyset_pages_and_no_line_is_skipped(env, engine, uni, tenant):
    """A posted line deleted below the windows would shift every later window by one: the line
    at a window's edge would never be read. Each window starts with the previous one's last line,
    so the shift is seen, and the rest is read by keyset from the cursor."""
    uni.faults.skip_shift = True

    assert run_sync("uni", echo=None).ok

    assert entry_ids(engine, "uni") == uni.row_ids()
    exact(engine, uni)
    requests = trans_requests(uni)
    assert [r.query.get("$skip") for r in requests].count("0") == 1  # the windows began once...
    assert any("$skip" not in r.query and "RowId gt" in r.query.get("$filter", "") for r in requests)  # ...keyset took over
