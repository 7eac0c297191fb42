"""Navision Online end to end: the NAV emulator over real HTTPS → Dagster job → warehouse, on SQLite
and PostgreSQL. Small company, small server pages, so the whole file stays quick."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal

import pytest
import sqlalchemy as sa
from b123_emulators.navision import NavisionEmulator
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from b123_pipelines import tables as t
from b123_pipelines.connectors.navision_online import NavisionOnlineConnector
from b123_pipelines.errors import ConfigurationError
from b123_pipelines.runner import run_sync
from b123_pipelines.sync import load_cursor
from b123_pipelines.tenants import add_tenant, get_tenant, store_credentials
from b123_pipelines_tests.helpers import entry_ids, last_run, nonzero, overlapping, warehouse_sums

ENTRIES, PAGE = 600, 50
KEY = "nav-access-key-SENTINEL-3"
WHO = "Tenant 'nord' (Navision Online)"


@pytest.fixture
def nav(monkeypatch):
    with NavisionEmulator(entries=ENTRIES, seed=5, page_size=PAGE, access_key=KEY, journal_lines=2) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)  # trust its certificate, the standard way
        yield emu


@pytest.fixture
def nord(engine, vault, nav):
    return add_tenant(engine, vault, "nord", "navision_online", "Nord A/S", nav.connection())


def dimension_sums(engine, table=t.transactions) -> dict:
    """Sum of amount per (dimension code, value code), through the slots dimension_values declares."""
    dims, c = t.dimension_values.c, table.c
    sums: dict = defaultdict(Decimal)
    with engine.connect() as conn:
        slots = dict(conn.execute(sa.select(dims.slot, dims.dimension).where(
            dims.tenant_id == "nord", dims.slot.is_not(None)).distinct()).all())
        for slot, dimension in slots.items():
            column = c[f"dimension_{slot}"]
            for code, amount in conn.execute(sa.select(column, sa.func.sum(c.amount)).where(
                    c.tenant_id == "nord", column != "").group_by(column)):
                sums[(dimension, code)] += amount
    return dict(sums)


def vouchers(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.transactions.c.voucher).where(t.transactions.c.tenant_id == "nord")).scalars())


def entries_pages(nav) -> list:
    """The requests for G/L entries' pages (not the one for the newest entry, newest first)."""
    return [r for r in nav.requests if r.path.endswith("/GLEntries") and "desc" not in r.query.get("$orderby", "")]


def newest_asked(nav) -> list:
    return [r for r in nav.requests if r.path.endswith("/GLEntries") and "desc" in r.query.get("$orderby", "")]


def exact(engine, nav) -> None:
    assert entry_ids(engine, "nord") == [e["Entry_No"] for e in nav.posted_entries()]
    truth = nonzero(nav.sums_by_account_month())
    assert nonzero(warehouse_sums(engine, "nord")) == truth
    assert nonzero(warehouse_sums(engine, "nord", t.budget_actuals)) == truth


def test_full_sync_is_exact_per_account_month_and_dimension_value(env, engine, nav, nord):
    outcome = run_sync("nord", echo=None)

    assert outcome.ok, outcome.message
    exact(engine, nav)
    assert all(isinstance(v, Decimal) for v in nav.sums_by_account_month().values())
    truth = nav.sums_by_dimension()
    assert {d for d, _ in truth} == {"AFDELING", "PROJEKT"}
    assert dimension_sums(engine) == truth
    assert dimension_sums(engine, t.budget_actuals) == truth
    with engine.connect() as conn:
        slots = dict(conn.execute(sa.select(t.dimension_values.c.dimension, t.dimension_values.c.slot)
                                  .where(t.dimension_values.c.tenant_id == "nord").distinct()).all())
        types = set(conn.execute(sa.select(t.accounts.c.account_type)).scalars())
        blocked = set(conn.execute(sa.select(t.dimension_values.c.code).where(t.dimension_values.c.blocked)).scalars())
    assert slots == {"AFDELING": 1, "PROJEKT": 2, "OMRÅDE": None}
    assert types == {"Posting", "Heading", "Begin-Total", "End-Total", "Total"}  # headings and totals are accounts
    assert blocked == {"UDV"}
    # One call for the newest entry; its 600 are one Entry_No range (a default server's page of
    # 1,000), read by server-driven paging: one request per page of 50, each after the first by
    # its next link.
    assert [r.query["$filter"] for r in newest_asked(nav)] == ["Entry_No gt 0"]
    pages = entries_pages(nav)
    assert len(pages) == math.ceil(ENTRIES / PAGE)
    assert [("$skiptoken" in p.query) for p in pages] == [False] + [True] * (len(pages) - 1)
    assert {p.query["$filter"] for p in pages} == {f"Entry_No gt 0 and Entry_No le {ENTRIES}"}
    run = last_run(engine, "nord")
    assert run["transactions_fetched"] == ENTRIES and run["api_calls"] == len(nav.requests)
    with engine.connect() as conn:
        lines = conn.execute(sa.select(t.sync_log).where(t.sync_log.c.run_id == run["run_id"],
                                                         t.sync_log.c.page.is_not(None))).mappings().all()
    assert lines[-1]["pages_total"] == 1 and lines[-1]["rows_so_far"] == ENTRIES
    # The journal's lines were listed for the check, and none of them is among the figures.
    journal = {line["Document_No"] for line in nav.journal_lines()}
    assert journal and not journal & vouchers(engine)
    check = DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey(["navision_online", "transactions"]), "draft_exclusion")])
    assert next(iter(check.values())).status.value == "SUCCEEDED"


def test_second_sync_asks_only_above_the_cursor_and_posted_journal_lines_arrive(env, engine, nav, nord):
    assert run_sync("nord", echo=None).ok
    assert load_cursor(engine, "nord") == {"entry_no": ENTRIES}
    journal = {line["Document_No"] for line in nav.journal_lines()}
    nav.clear_requests()
    booked = nav.book_entries(4)
    posted = nav.post_journal()
    unposted = {line["Document_No"] for line in nav.add_journal_lines(1)}

    outcome = run_sync("nord", echo=None)

    assert outcome.ok, outcome.message
    assert last_run(engine, "nord")["transactions_fetched"] == len(booked) + len(posted) == 8
    pages = entries_pages(nav)
    assert pages and all(p.query["$filter"] == f"Entry_No gt {ENTRIES} and Entry_No le {ENTRIES + 8}"
                         for p in pages)
    assert [r.query["$filter"] for r in newest_asked(nav)] == [f"Entry_No gt {ENTRIES}"]
    counts = [r.query["$filter"] for r in nav.requests if r.path.endswith("/GLEntries/$count")]
    assert counts == [f"Entry_No gt {ENTRIES}", f"Entry_No le {ENTRIES + 8}"]  # what is new; the row_counts check
    assert journal <= vouchers(engine) and not unposted & vouchers(engine)
    assert load_cursor(engine, "nord") == {"entry_no": ENTRIES + 8}
    exact(engine, nav)
    assert dimension_sums(engine, t.budget_actuals) == nav.sums_by_dimension()


def test_repeats_at_page_boundaries_and_entries_posted_while_paging_are_neither_lost_nor_doubled(env, engine, nav, nord):
    nav.faults.repeat_boundary_entry = True
    nav.faults.book_while_paging = (2, 4)

    assert run_sync("nord", echo=None).ok
    assert run_sync("nord", echo=None).ok

    assert nav.entry_count() == ENTRIES + 4
    exact(engine, nav)


def test_a_server_that_serves_its_journal_as_posted_fails_the_blocking_draft_check(env, engine, nav, nord):
    assert run_sync("nord", echo=None).ok
    actuals = warehouse_sums(engine, "nord", t.budget_actuals)
    nav.faults.leak_drafts = True

    outcome = run_sync("nord", echo=None)

    assert not outcome.ok
    assert "draft_exclusion" in outcome.message and "were not changed" in outcome.message
    assert warehouse_sums(engine, "nord", t.budget_actuals) == actuals


def _expired_key(nav, engine, vault):
    nav.access_key = "a-new-key-generated-in-NAV"
    return lambda: store_credentials(engine, vault, "nord", nav.connection())


def _unpublished(nav, engine, vault):
    nav.unpublish("GLEntries")
    return lambda: nav.publish("GLEntries")


def _wrong_company(nav, engine, vault):
    store_credentials(engine, vault, "nord", nav.connection(company="cronus danmark a/s"))
    return lambda: store_credentials(engine, vault, "nord", nav.connection())


@pytest.mark.parametrize("breaks, words, new_credentials", [
    (_expired_key, ["refused the user name 'BUDGET123'", "wrong or has expired",
                    "generate a new Web Service Access Key"], True),
    (_unpublished, ["does not publish the service 'GLEntries'", "G/L entries",
                    "NAV's Web Services page"], False),
    (_wrong_company, ["no company named 'cronus danmark a/s'", "case-sensitive",
                      "it has 'CRONUS Danmark A/S'"], False),
], ids=["expired_key", "unpublished_service", "wrong_company"])
def test_a_refusal_is_explained_keeps_what_was_loaded_and_the_fix_resumes(
        env, engine, vault, nav, nord, breaks, words, new_credentials):
    assert run_sync("nord", echo=None).ok
    before = (entry_ids(engine, "nord"), warehouse_sums(engine, "nord", t.budget_actuals))
    nav.book_entries(4)
    fix = breaks(nav, engine, vault)

    outcome = run_sync("nord", echo=None)

    assert not outcome.ok
    assert outcome.message.startswith(WHO), outcome.message
    for word in words:
        assert word in outcome.message, outcome.message
    assert KEY not in outcome.message and nav.access_key not in outcome.message
    assert (entry_ids(engine, "nord"), warehouse_sums(engine, "nord", t.budget_actuals)) == before
    assert get_tenant(engine, "nord").awaiting_credentials is new_credentials

    fix()
    resumed = run_sync("nord", echo=None)

    assert resumed.ok, resumed.message
    assert last_run(engine, "nord")["transactions_fetched"] == 4
    assert not get_tenant(engine, "nord").awaiting_credentials
    exact(engine, nav)


@pytest.mark.parametrize("storm", [
    # A Retry-After to honour, then a burst of 503s on the same first request.
    lambda faults: (faults.rate_limit(2, retry_after=1), faults.server_errors(3, status=503)),
    # No Retry-After: back off on our own; then 502s.
    lambda faults: (faults.rate_limit(3, retry_after=None), faults.server_errors(2, status=502)),
], ids=["retry_after_then_503", "no_retry_after_then_502"])
def test_rate_limits_and_server_errors_are_ridden_out_with_exact_sums(env, engine, nav, nord, storm):
    assert run_sync("nord", echo=None).ok
    nav.book_entries(6)
    nav.clear_requests()
    storm(nav.faults)

    outcome = run_sync("nord", echo=None)

    assert outcome.ok, outcome.message
    refused = [r.status for r in nav.requests if r.status != 200]
    assert len(refused) == 5 and set(refused) - {429} in ({503}, {502})
    assert last_run(engine, "nord")["transactions_fetched"] == 6
    exact(engine, nav)
    assert dimension_sums(engine, t.budget_actuals) == nav.sums_by_dimension()


# ---------------------------------------------------------------- Entry_No ranges side by side
BIG, BIG_PAGE = 4000, 1000  # four ranges of a default server's page


@pytest.fixture
def big_nav(monkeypatch):
    with NavisionEmulator(entries=BIG, seed=6, page_size=BIG_PAGE, access_key=KEY) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)
        yield emu


def test_entry_no_ranges_are_fetched_side_by_side_and_the_sums_stay_exact(env, engine, vault, big_nav):
    add_tenant(engine, vault, "nord", "navision_online", "Nord A/S", big_nav.connection())
    big_nav.faults.latency = 0.2  # a far-away server

    outcome = run_sync("nord", echo=None)

    assert outcome.ok, outcome.message
    pages = entries_pages(big_nav)
    assert sorted(p.query["$filter"] for p in pages) == sorted(
        f"Entry_No gt {n} and Entry_No le {n + BIG_PAGE}" for n in range(0, BIG, BIG_PAGE))
    assert overlapping(pages)  # two at once, the budget's concurrent_calls
    assert load_cursor(engine, "nord") == {"entry_no": BIG}
    exact(engine, big_nav)


def test_a_sync_killed_mid_entries_resumes_without_gap_or_duplicate(env, engine, vault, big_nav):
    add_tenant(engine, vault, "nord", "navision_online", "Nord A/S", big_nav.connection())
    # The first range's page comes at once, the rest late (they reach the server in any order):
    # ranges fetched side by side would otherwise all be committed before the kill.
    big_nav.faults.page_delay, big_nav.faults.page_delay_above = 5, 1
    cli = [sys.executable, "-m", "b123_pipelines.cli", "sync", "nord"]
    sync = subprocess.Popen(cli, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up = time.monotonic() + 120
    while not entry_ids(engine, "nord"):  # killed once a range is committed
        assert sync.poll() is None and time.monotonic() < give_up, "the sync ended before it was killed"
        time.sleep(0.05)
    os.kill(sync.pid, signal.SIGKILL)
    sync.wait()
    partial = entry_ids(engine, "nord")
    assert 0 < len(partial) < BIG
    assert partial == list(range(1, len(partial) + 1))  # whole ranges, from the first
    assert load_cursor(engine, "nord") == {"entry_no": max(partial)}  # the cursor moved with the rows
    big_nav.faults.page_delay = 0

    assert run_sync("nord", echo=None).ok

    ids = entry_ids(engine, "nord")
    assert len(ids) == len(set(ids)) == BIG
    exact(engine, big_nav)


def test_connection_json_is_checked_field_by_field():
    good = {"base_url": "https://nav.example.com:7048/DynamicsNAV110/ODataV4", "company": "CRONUS Danmark A/S",
            "username": "BUDGET123", "web_service_access_key": "k" * 44}
    settings = NavisionOnlineConnector.parse_connection("nord", good)
    assert settings.services.entries == "GLEntries" and settings.services.journal_lines == "GeneralJournalLines"
    assert NavisionOnlineConnector.secret_fields() == ["web_service_access_key"]
    for bad, field in [
        ({k: v for k, v in good.items() if k != "company"}, "company: Field required"),
        ({**good, "username": 42}, "username: Input should be a valid string"),
        ({**good, "web_service_access_key": ""}, "web_service_access_key"),
        ({**good, "base_url": "https://nav.example.com:7048/DynamicsNAV110/OData"}, "base_url: Value error"),
        ({**good, "base_url": "http://nav.example.com:7048/DynamicsNAV110/ODataV4"}, "https://"),
        ({**good, "services": {"entries": 7}}, "services.entries"),
        ({**good, "services": {"ledger": "X"}}, "services.ledger"),
    ]:
        with pytest.raises(ConfigurationError) as refused:
            NavisionOnlineConnector.parse_connection("nord", bad)
        assert field in str(refused.value) and WHO in str(refused.value)
        assert "k" * 44 not in str(refused.value)
