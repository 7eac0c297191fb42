"""The connector kit: a small OData-shaped system (tiny_ledger.py, one short connector) registered with
one line and synced end to end through Dagster against a tiny emulator over real HTTPS."""

from __future__ import annotations

import base64
import datetime as dt
import random
import threading
import time
from collections import defaultdict
from decimal import Decimal

import pytest
import sqlalchemy as sa
from b123_emulators.server import EmulatorServer, HttpError, Request, json_response
from dagster import AssetKey

from b123_pipelines import connectors
from b123_pipelines import tables as t
from b123_pipelines.connectors.kit.ranges import in_order, split
from b123_pipelines.definitions import build_definitions
from b123_pipelines.runner import run_sync
from b123_pipelines.tenants import add_tenant
from b123_pipelines_tests.helpers import count, last_run
from b123_pipelines_tests.tiny_ledger import PAGE_SIZE, TinyLedgerConnector

USER, PASSWORD = "ledger", "ledger-SENTINEL-pw"
ACCOUNTS = [(1000, "Salg", "Posting"), (1100, "Varekøb", "Posting"), (1999, "Resultat", "Total"),
            (5000, "Bank", "Posting")]


class TinyLedgerEmulator(EmulatorServer):
    """Accounts paged by @odata.nextLink three at a time; entries by $filter/$orderby/$top."""

    def __init__(self, entries: int):
        super().__init__(tls=True)
        self.twice_on_a_page = False  # each page of entries carries its first entry twice
        rng = random.Random(3)
        self.entries = [
            {"Entry_No": n, "G_L_Account_No": rng.choice([1000, 1100, 5000]),
             "Posting_Date": (dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365))).isoformat(),
             "Amount": Decimal(rng.randrange(-99999, 99999)) / 100, "Document_No": f"D{n}",
             "Department_Code": rng.choice(["", "SALG", "ADM"])}
            for n in range(1, entries + 1)]

    def route(self, request: Request):
        self.gate()
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode():
            raise HttpError(401, "Unauthorized")
        params = dict(request.params)
        if request.path == "/Accounts":
            skip = int(params.get("$skiptoken", 0))
            page = [{"No": n, "Name": name, "Account_Type": kind} for n, name, kind in ACCOUNTS[skip:skip + 3]]
            more = {"@odata.nextLink": f"{self.url}/Accounts?$skiptoken={skip + 3}"} if skip + 3 < len(ACCOUNTS) else {}
            return json_response({"value": page, **more})
        if request.path == "/Departments":
            return json_response({"value": [{"Code": "SALG", "Name": "Salg"}, {"Code": "ADM", "Name": "Administration"}]})
        if request.path == "/GLEntries":
            after = int(params["$filter"].removeprefix("Entry_No gt ")) if "$filter" in params else 0
            assert params["$orderby"] == "Entry_No"
            chosen = [e for e in self.entries if e["Entry_No"] > after][:int(params["$top"])]
            if self.twice_on_a_page and chosen:
                chosen = [*chosen[:-1], chosen[0], chosen[-1]]  # a page's entry again, changed or not
            return json_response({"value": chosen})
        raise HttpError(404, "Not found")

    def sums(self, key) -> dict:
        totals = defaultdict(Decimal)
        for e in self.entries:
            totals[key(e)] += e["Amount"]
        return dict(totals)


@pytest.fixture
def ledger(env, engine, vault, monkeypatch):
    monkeypatch.setitem(connectors.CONNECTORS, TinyLedgerConnector.system, TinyLedgerConnector)  # the registry line
    with TinyLedgerEmulator(entries=PAGE_SIZE * 4 + 7) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)
        add_tenant(engine, vault, "tiny", "tiny_ledger", "Tiny ApS",
                   {"base_url": emu.url, "username": USER, "password": PASSWORD})
        yield emu


def _sums(engine, *columns) -> dict:
    tx = t.transactions.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*[tx[c] for c in columns], sa.func.sum(tx.amount))
                            .where(tx.tenant_id == "tiny").group_by(*[tx[c] for c in columns]))
        return {tuple(r[:-1]) if len(columns) > 1 else r[0]: r[-1] for r in rows}


def test_a_small_odata_system_syncs_end_to_end_through_the_kit(ledger, engine):
    outcome = run_sync("tiny", echo=None)

    assert outcome.ok, outcome.message
    assert _sums(engine, "account_number", "period") == {
        (str(k[0]), k[1]): v for k, v in ledger.sums(
            lambda e: (e["G_L_Account_No"], dt.date.fromisoformat(e["Posting_Date"]).replace(day=1))).items()}
    assert _sums(engine, "dimension_1") == ledger.sums(lambda e: e["Department_Code"])
    assert count(engine, t.accounts, tenant_id="tiny") == len(ACCOUNTS)
    entries_pages = [r for r in ledger.requests if r.path == "/GLEntries"]
    assert len(entries_pages) == 5  # four full pages and one short one: no call more
    assert last_run(engine, "tiny")["api_calls"] == len(ledger.requests)

    ledger.entries.append({**ledger.entries[0], "Entry_No": len(ledger.entries) + 1, "Amount": Decimal("0.01")})
    ledger.clear_requests()
    again = run_sync("tiny", echo=None)

    assert again.ok and last_run(engine, "tiny")["transactions_fetched"] == 1
    assert [r.query["$filter"] for r in ledger.requests if r.path == "/GLEntries"] == [f"Entry_No gt {PAGE_SIZE * 4 + 7}"]


def test_only_the_checks_the_system_can_run_are_attached():
    graph = build_definitions().resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys if k.asset_key.path[0] == "economic"}
    assert checks == {"draft_exclusion", "row_counts", "actuals_match_transactions", "reconciliation"}


def test_a_system_without_drafts_totals_or_counts_gets_the_checks_that_need_none(ledger):
    graph = build_definitions().resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys if k.asset_key.path[0] == "tiny_ledger"}
    assert checks == {"row_counts", "actuals_match_transactions"}
    assert AssetKey(["tiny_ledger", "budget_actuals"]) in graph.get_all_asset_keys()


def test_an_entry_sent_twice_on_one_page_is_stored_once(ledger, engine):
    ledger.twice_on_a_page = True

    outcome = run_sync("tiny", echo=None)

    assert outcome.ok, outcome.message
    assert count(engine, t.transactions, tenant_id="tiny") == len(ledger.entries)
    assert _sums(engine, "dimension_1") == ledger.sums(lambda e: e["Department_Code"])


# ---------------------------------------------------------------- key ranges side by side
def test_key_ranges_cover_every_key_once():
    ranges = split(after=100, upto=10_137, expected=5_000, per_range=1000)
    assert len(ranges) == 5 and ranges[0].after == 100 and ranges[-1].upto == 10_137
    assert all(a.upto == b.after for a, b in zip(ranges, ranges[1:]))
    assert split(after=7, upto=7, expected=0, per_range=1000) == []


def test_ranges_are_fetched_side_by_side_within_the_limit_and_handed_on_in_order():
    running, most = [0], [0]
    lock = threading.Lock()
    together = threading.Barrier(4, timeout=10)  # four fetches must be under way at once to pass it

    def fetch(n):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if n < 4:
            together.wait()
        time.sleep(random.uniform(0, 0.01))  # later ranges often finish first
        with lock:
            running[0] -= 1
        return n * n

    assert list(in_order(fetch, range(40), at_once=4)) == [(n, n * n) for n in range(40)]
    assert most[0] == 4  # never more than the limit


def test_a_failed_range_is_raised_after_the_ranges_before_it_and_nothing_after_is_fetched():
    fetched = []

    def fetch(n):
        fetched.append(n)
        if n == 3:
            raise ValueError("range 3 failed")
        return n

    handed = []
    with pytest.raises(ValueError, match="range 3"):
        for n, _ in in_order(fetch, range(1000), at_once=2):
            handed.append(n)
    assert handed == [0, 1, 2]
    time.sleep(0.1)
    assert max(fetched) < 3 + 2 * 2 + 1  # only the window ahead of the failure was asked for
