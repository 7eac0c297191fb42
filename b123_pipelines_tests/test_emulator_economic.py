"""The e-conomic emulator, over real HTTP on loopback: shapes, paging, filters, exact money, the
mutations and every fault the end-to-end tests rely on."""

from __future__ import annotations

import datetime as dt
from http.client import HTTPConnection
import json
import os
import re
import socket
import ssl
import time
import tracemalloc
import zlib
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
import requests

from b123_emulators.economic import EconomicEmulator
from b123_emulators.faults import MIB

TOKENS = {"X-AppSecretToken": "emu-app-secret", "X-AgreementGrantToken": "emu-grant"}


@pytest.fixture(scope="module")
def shared():
    """A read-only emulator for the tests that do not change anything."""
    with EconomicEmulator(entries=2000, seed=1) as emu:
        yield emu


@pytest.fixture
def emu():
    """A fresh emulator for tests that book, edit or switch faults on."""
    with EconomicEmulator(entries=2000, seed=1) as emulator:
        yield emulator


def http(emu: EconomicEmulator, path: str, headers: dict | None = None, **params) -> requests.Response:
    return requests.get(emu.url + path, headers=TOKENS if headers is None else headers,
                        params=params, timeout=10)


def body(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def follow(emu: EconomicEmulator, path: str, **params) -> list[list[dict]]:
    """Every page, following nextPage to the end."""
    pages, response = [], http(emu, path, **params)
    while True:
        page = body(response)
        pages.append(page["collection"])
        if "nextPage" not in page["pagination"]:
            return pages
        response = requests.get(page["pagination"]["nextPage"], headers=TOKENS, timeout=10)


def year_entries(emu: EconomicEmulator, year: str) -> list[dict]:
    return [e for e in emu.posted_entries() if e["accountingYear"]["year"] == year]


def entries_path(year: str) -> str:
    return f"/accounting-years/{year.replace('/', '_6_')}/entries"


# ---------------------------------------------------------------------------------------------- auth
def test_wrong_or_missing_tokens_get_401_with_the_error_body(shared):
    for headers in ({}, {**TOKENS, "X-AgreementGrantToken": "nope"}):
        response = http(shared, "/accounts", headers=headers)
        assert response.status_code == 401
        error = response.json()
        assert error["httpStatusCode"] == 401
        assert "revoked" in error["message"]
        assert {"message", "developerHint", "logId", "logTime", "errors"} <= set(error)


def test_demo_tokens_are_accepted_and_headers_are_set(shared):
    response = http(shared, "/accounts", headers={"X-AppSecretToken": "demo",
                                                  "X-AgreementGrantToken": "demo"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-CallCost"] == "1"
    assert re.fullmatch(r"token-limit-10000-per-60-seconds: \d+/10000",
                        response.headers["X-RateLimiting"])


def test_connection_is_kept_alive(shared):
    connection = HTTPConnection("127.0.0.1", int(shared.url.rsplit(":", 1)[1]))
    sockets = set()
    for path in ("/accounts", "/departments", "/journals"):
        connection.request("GET", path, headers=TOKENS)
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.getheader("Content-Length")) == len(response.read())
        sockets.add(id(connection.sock))
    assert len(sockets) == 1  # one TCP connection served all three
    connection.close()


def test_requests_are_recorded(emu):
    http(emu, "/accounts", pagesize=5)
    http(emu, "/accounts", headers={})
    assert [(r.method, r.path, r.query, r.status) for r in emu.requests] == [
        ("GET", "/accounts", {"pagesize": "5"}, 200), ("GET", "/accounts", {}, 401)]
    emu.clear_requests()
    assert emu.requests == []


# ---------------------------------------------------------------------------------------------- company
def test_chart_has_every_account_type_danish_names_and_an_unused_account(shared):
    accounts = [a for page in follow(shared, "/accounts", pagesize=1000) for a in page]
    assert accounts == shared.accounts()
    assert {a["accountType"] for a in accounts} == {
        "profitAndLoss", "status", "totalFrom", "heading", "headingStart", "sumInterval", "sumAlpha"}
    names = {a["name"] for a in accounts}
    assert {"Salg af varer", "Vareforbrug", "Løn", "Husleje", "Bank", "Debitorer", "Kreditorer",
            "Egenkapital"} <= names
    used = {number for number, _ in shared.sums_by_account_month()}
    assert any(a["accountType"] == "profitAndLoss" and a["accountNumber"] not in used
               for a in accounts)
    assert all(a.get("barred", True) is True for a in accounts)  # booleans only when true


def test_dimensions_and_journals(shared):
    departments = body(http(shared, "/departments"))["collection"]
    assert [d["name"] for d in departments][:4] == ["Salg", "Administration", "Produktion", "Lager"]
    distributions = body(http(shared, "/departmental-distributions"))["collection"]
    splits = [d for d in distributions if d["distributionType"] == "distribution"]
    assert splits and all(sum(p["percentage"] for p in d["distributions"]) == 100 for d in splits)
    journals = body(http(shared, "/journals"))["collection"]
    assert journals[0]["name"] == "Kassekladde"
    drafts = body(http(shared, "/journals/1/entries"))["collection"]
    assert drafts == shared.draft_entries() and len(drafts) == 4
    posted_vouchers = {e["voucherNumber"] for e in shared.posted_entries()}
    assert not {d["voucher"]["voucherNumber"] for d in drafts} & posted_vouchers


def test_unknown_path_and_year_are_404(shared):
    assert http(shared, "/nothing").status_code == 404
    assert http(shared, "/accounting-years/1999/entries").json()["httpStatusCode"] == 404


# ---------------------------------------------------------------------------------------------- paging
@pytest.mark.parametrize("year", ["2024", "2025", "2026"])
def test_paging_by_entry_number_sees_every_entry_once_and_equals_the_truth(shared, year):
    pages = follow(shared, entries_path(year), pagesize=97, sort="entryNumber")
    seen = [e for page in pages for e in page]
    assert seen == year_entries(shared, year)
    assert all(len(page) == 97 for page in pages[:-1])


def test_default_order_is_date_then_entry_number_and_descending_sort_works(emu):
    emu.book_entries(6, "2025")  # higher numbers, earlier or later dates
    default = [e for page in follow(emu, entries_path("2025"), pagesize=1000) for e in page]
    assert [(e["date"], e["entryNumber"]) for e in default] == sorted(
        (e["date"], e["entryNumber"]) for e in year_entries(emu, "2025"))
    descending = body(http(emu, entries_path("2025"), pagesize=1000, sort="-entryNumber"))
    numbers = [e["entryNumber"] for e in descending["collection"]]
    assert numbers == sorted(numbers, reverse=True)


def test_pagination_envelope_links(shared):
    page = body(http(shared, entries_path("2024"), pagesize=100, skippages=2,
                     filter="entryNumber$gt:10"))
    pagination = page["pagination"]
    assert pagination["maxPageSizeAllowed"] == 1000 and pagination["skipPages"] == 2
    assert pagination["results"] == pagination["resultsWithoutFilter"] - 10
    assert "skippages=3" in pagination["nextPage"] and "filter=entryNumber$gt:10" in pagination["nextPage"]
    assert pagination["firstPage"].startswith(shared.url) and "skippages=0" in pagination["firstPage"]
    last = body(requests.get(pagination["lastPage"], headers=TOKENS, timeout=10))
    assert "nextPage" not in last["pagination"] and last["collection"]


def test_page_size_above_1000_is_refused(shared):
    response = http(shared, "/accounts", pagesize=1001)
    assert response.status_code == 400 and response.json()["httpStatusCode"] == 400


# ---------------------------------------------------------------------------------------------- filters
def test_entry_number_filters(shared):
    truth = [e["entryNumber"] for e in year_entries(shared, "2025")]
    lo, mid = truth[0], truth[len(truth) // 2]
    cases = {
        f"entryNumber$gt:{mid}": [n for n in truth if n > mid],
        f"entryNumber$gte:{mid}": [n for n in truth if n >= mid],
        f"entryNumber$lt:{mid}": [n for n in truth if n < mid],
        f"entryNumber$lte:{mid}": [n for n in truth if n <= mid],
        f"entryNumber$eq:{mid}": [mid],
        f"entryNumber$ne:{mid}": [n for n in truth if n != mid],
        f"entryNumber$in:[{lo},{mid},999999]": [lo, mid],
        f"entryNumber$nin:[{lo},{mid}]": [n for n in truth if n not in (lo, mid)],
        f"entryNumber$gt:{lo + 10}$and:entryNumber$lte:{lo + 20}": list(range(lo + 11, lo + 21)),
        f"entryNumber$lt:{lo + 2}$or:entryNumber$gt:{truth[-1] - 2}": [lo, lo + 1, *truth[-2:]],
    }
    for filter_, expected in cases.items():
        page = body(http(shared, entries_path("2025"), pagesize=1000, sort="entryNumber",
                         filter=filter_))
        assert [e["entryNumber"] for e in page["collection"]] == expected, filter_
        count = body(http(shared, entries_path("2025"), pagesize=1, filter=filter_))
        assert count["pagination"]["results"] == len(expected), filter_


def test_date_and_other_field_filters(shared):
    truth = year_entries(shared, "2024")
    cases = {
        "date$gte:2024-03-01$and:date$lt:2024-04-01":
            lambda e: "2024-03-01" <= e["date"] < "2024-04-01",
        "date$eq:2024-06-03": lambda e: e["date"] == "2024-06-03",
        "date$ne:2024-06-03": lambda e: e["date"] != "2024-06-03",
        "currency$eq:EUR": lambda e: e["currency"] == "EUR",
        "amount$gt:50000": lambda e: e["amount"] > 50000,
        "text$like:*Løn*": lambda e: "løn" in e["text"].lower(),
        "entryType$eq:customerInvoice$and:date$lte:2024-02-01":
            lambda e: e["entryType"] == "customerInvoice" and e["date"] <= "2024-02-01",
    }
    for filter_, keep in cases.items():
        page = body(http(shared, entries_path("2024"), pagesize=1000, sort="entryNumber",
                         filter=filter_))
        expected = [e["entryNumber"] for e in truth if keep(e)]
        assert expected, filter_
        assert [e["entryNumber"] for e in page["collection"]] == expected, filter_


def test_filter_on_a_field_that_cannot_be_filtered_is_400(shared):
    response = http(shared, entries_path("2024"), filter="account$eq:5800")
    assert response.status_code == 400
    assert "entryNumber" in response.json()["allowedFilteringFields"]
    accounts = http(shared, "/accounts", filter="balance$gt:0")
    assert "accountNumber" in accounts.json()["allowedFilteringFields"]


def test_account_filters(shared):
    page = body(http(shared, "/accounts", pagesize=1000, filter="accountType$eq:status"))
    assert page["collection"] and {a["accountType"] for a in page["collection"]} == {"status"}
    barred = body(http(shared, "/accounts", filter="barred$eq:true"))["collection"]
    assert barred and all(a["barred"] for a in barred)


# ---------------------------------------------------------------------------------------------- years
def test_broken_year_key_in_urls():
    with EconomicEmulator(entries=600, years=["2022/2023", "2024"]) as emu:
        years = body(http(emu, "/accounting-years"))["collection"]
        assert [(y["year"], y["fromDate"], y["toDate"]) for y in years] == [
            ("2022/2023", "2022-07-01", "2023-06-30"), ("2024", "2024-01-01", "2024-12-31")]
        assert years[0]["entries"].endswith("/accounting-years/2022_6_2023/entries")
        periods = body(http(emu, "/accounting-years/2022_6_2023/periods"))["collection"]
        assert len(periods) == 12 and periods[0]["fromDate"] == "2022-07-01"
        entries = [e for p in follow(emu, "/accounting-years/2022_6_2023/entries", pagesize=1000)
                   for e in p]
        assert entries == year_entries(emu, "2022/2023")
        assert all("2022-07-01" <= e["date"] <= "2023-06-30" for e in entries)
        assert entries[0]["entryType"] == "openingEntry"
        emu.book_entries(2, "2022/2023")
        assert body(http(emu, "/accounting-years/2022_6_2023/entries", pagesize=1,
                         filter=f"entryNumber$gt:600"))["pagination"]["results"] == 2


def test_period_entries(shared):
    march = body(http(shared, "/accounting-years/2025/periods/3/entries", pagesize=1000))
    assert [e["entryNumber"] for e in march["collection"]] == [
        e["entryNumber"] for e in year_entries(shared, "2025") if e["date"][:7] == "2025-03"]


# ---------------------------------------------------------------------------------------------- money
def test_vouchers_balance_and_only_postable_accounts_are_hit(shared):
    per_voucher = defaultdict(Decimal)
    postable = {a["accountNumber"] for a in shared.accounts()
                if a["accountType"] in ("profitAndLoss", "status")}
    for entry in shared.posted_entries():
        per_voucher[entry["voucherNumber"]] += entry["amountInBaseCurrency"]
        assert entry["account"]["accountNumber"] in postable
        assert len(entry["text"]) <= 255
    assert per_voucher and set(per_voucher.values()) == {Decimal(0)}
    entries = list(shared.posted_entries())
    assert [e["entryNumber"] for e in entries] == list(range(1, 2001))
    assert {"customerInvoice", "supplierInvoice", "customerPayment", "supplierPayment",
            "financeVoucher", "openingEntry"} <= {e["entryType"] for e in entries}
    assert any(e["currency"] == "EUR" and e["amount"] != e["amountInBaseCurrency"] for e in entries)
    assert any("departmentalDistribution" in e for e in entries)


def test_amounts_are_exact_decimal_literals_summing_to_the_truth(shared):
    sums = defaultdict(Decimal)
    for year in shared.years():
        for page in follow(shared, entries_path(year), pagesize=1000):
            for entry in page:
                month = dt.date.fromisoformat(entry["date"]).replace(day=1)
                sums[(entry["account"]["accountNumber"], month)] += entry["amountInBaseCurrency"]
        raw = http(shared, entries_path(year), pagesize=1000).text
        literals = re.findall(r'"amount(?:InBaseCurrency)?":(-?[0-9.eE+]+)', raw)
        assert literals and all(re.fullmatch(r"-?\d+\.\d{2}", lit) for lit in literals)
    assert dict(sums) == shared.sums_by_account_month()


def test_totals_equal_the_truth(shared):
    for year in shared.years():
        totals = [t for page in follow(shared, f"/accounting-years/{year}/totals", pagesize=1000)
                  for t in page]
        expected = defaultdict(Decimal)
        for (account, month), amount in shared.sums_by_account_month().items():
            if month.year == int(year):
                expected[account] += amount
        assert {t["account"]["accountNumber"]: t["totalInBaseCurrency"] for t in totals} == expected
        assert {(t["fromDate"], t["toDate"]) for t in totals} == {(f"{year}-01-01", f"{year}-12-31")}


def test_same_seed_same_data_other_seed_other_data():
    first = EconomicEmulator(entries=200, seed=7)
    again = EconomicEmulator(entries=200, seed=7)
    other = EconomicEmulator(entries=200, seed=8)
    assert list(first.posted_entries()) == list(again.posted_entries())
    assert list(first.posted_entries()) != list(other.posted_entries())


# ---------------------------------------------------------------------------------------------- mutations
def test_book_entries_into_an_earlier_year(emu):
    numbers = emu.book_entries(4, year="2024")
    assert numbers == [2001, 2002, 2003, 2004] and emu.entry_count() == 2004
    page = body(http(emu, entries_path("2024"), filter="entryNumber$gt:2000", sort="entryNumber"))
    assert [e["entryNumber"] for e in page["collection"]] == numbers
    assert all(e["date"].startswith("2024") for e in page["collection"])
    assert sum(e["amountInBaseCurrency"] for e in page["collection"]) == 0
    assert emu.book_entries(2) == [2005, 2006]  # default: the latest year
    assert body(http(emu, entries_path("2026"), filter="entryNumber$gt:2004"))["pagination"][
        "results"] == 2
    with pytest.raises(ValueError):
        emu.book_entries(3)


def test_drafts_are_booked_with_new_entry_numbers(emu):
    added = emu.add_draft(2)
    assert len(emu.draft_entries()) == 6 and added == emu.draft_entries()[-2:]
    numbers = emu.book_drafts()
    assert numbers == list(range(2001, 2007))
    assert emu.draft_entries() == [] and body(http(emu, "/journals/1/entries"))["collection"] == []
    assert [e["entryNumber"] for e in emu.posted_entries()][-6:] == numbers


def test_account_edits_show_in_accounts(emu):
    emu.add_account(3080, "Kurser og uddannelse")
    emu.rename_account(2800, "Husleje og fællesudgifter")
    accounts = {a["accountNumber"]: a for a in body(http(emu, "/accounts", pagesize=1000))["collection"]}
    assert accounts[3080]["name"] == "Kurser og uddannelse"
    assert accounts[2800]["name"] == "Husleje og fællesudgifter"
    with pytest.raises(ValueError):
        emu.add_account(3080, "Twice")


def test_renumber_moves_the_entries(emu):
    before = [e["entryNumber"] for e in emu.posted_entries() if e["account"]["accountNumber"] == 5800]
    emu.renumber_account(5800, 5820)
    served = [e for year in emu.years() for page in follow(emu, entries_path(year), pagesize=1000)
              for e in page]
    assert sorted(e["entryNumber"] for e in served if e["account"]["accountNumber"] == 5820) == before
    assert not any(e["account"]["accountNumber"] == 5800 for e in served)
    numbers = [a["accountNumber"] for a in emu.accounts()]
    assert 5820 in numbers and 5800 not in numbers
    assert not any(account == 5800 for account, _ in emu.sums_by_account_month())
    emu.renumber_account(5820, 5800)  # and back again
    assert [e["entryNumber"] for e in emu.posted_entries()
            if e["account"]["accountNumber"] == 5800] == before


def test_delete_account_refuses_when_it_has_entries(emu):
    with pytest.raises(ValueError):
        emu.delete_account(5800)
    emu.delete_account(3060)  # profitAndLoss, never posted to
    assert 3060 not in [a["accountNumber"] for a in body(http(emu, "/accounts", pagesize=1000))[
        "collection"]]
    with pytest.raises(ValueError):
        emu.delete_account(3060)


# ---------------------------------------------------------------------------------------------- faults
def test_revoked_grant_is_401_and_forbidden_is_403(emu):
    emu.faults.revoked = True
    assert http(emu, "/accounts").status_code == 401
    emu.faults.revoked = False
    emu.faults.forbidden = True
    response = http(emu, "/accounts")
    assert response.status_code == 403 and "role" in response.json()["message"]
    emu.faults.forbidden = False
    assert http(emu, "/accounts").status_code == 200


@pytest.mark.parametrize("retry_after", [2, None])
def test_rate_limit(emu, retry_after):
    emu.faults.rate_limit(2, retry_after=retry_after)
    for _ in range(2):
        response = http(emu, "/accounts")
        assert response.status_code == 429 and response.json()["message"] == "Rate limit exceeded"
        assert response.headers.get("Retry-After") == (None if retry_after is None else "2")
    assert http(emu, "/accounts").status_code == 200


def test_server_errors_then_recovery(emu):
    emu.faults.server_errors(3, status=502)
    assert [http(emu, "/accounts").status_code for _ in range(4)] == [502, 502, 502, 200]


def test_book_while_paging_repeats_entries_across_a_page_boundary(emu):
    before = [e["entryNumber"] for e in year_entries(emu, "2025")]
    emu.faults.book_while_paging = (3, 10)
    seen = [e["entryNumber"] for page in follow(emu, entries_path("2025"), pagesize=50)
            for e in page]
    assert emu.entry_count() == 2010
    repeated = [n for n, times in Counter(seen).items() if times > 1]
    assert len(repeated) == 10  # the ten booked before the cursor push ten seen ones onto page 4
    assert set(before) <= set(seen)
    emu.clear_requests()
    follow(emu, entries_path("2025"), pagesize=50)
    assert emu.entry_count() == 2010  # once only


def test_repeat_boundary_entry(emu):
    emu.faults.repeat_boundary_entry = True
    pages = follow(emu, entries_path("2024"), pagesize=100, sort="entryNumber")
    for before, page in zip(pages, pages[1:]):
        assert page[0] == before[-1]
    unique = {e["entryNumber"] for page in pages for e in page}
    assert unique == {e["entryNumber"] for e in year_entries(emu, "2024")}


def test_leak_drafts_serves_draft_lines_as_posted(emu):
    draft_year = emu.draft_entries()[0]["voucher"]["accountingYear"]["year"]
    emu.faults.leak_drafts = True
    served = [e for page in follow(emu, entries_path(draft_year), pagesize=1000) for e in page]
    leaked = [e for e in served if e["entryNumber"] > 2000]
    assert len(leaked) == 4
    assert {e["voucherNumber"] for e in leaked} == {
        d["voucher"]["voucherNumber"] for d in emu.draft_entries()}
    assert emu.entry_count() == 2000


@pytest.mark.parametrize("mode", ["malformed_json", "non_numeric_amount", "unknown_account"])
def test_corrupt_entries_pages(emu, mode):
    emu.faults.corrupt = mode
    response = http(emu, entries_path("2024"), pagesize=10)
    assert response.status_code == 200
    assert http(emu, "/accounts").status_code == 200 and http(emu, "/accounts").json()
    if mode == "malformed_json":
        with pytest.raises(ValueError):
            json.loads(response.text)
        return
    entries = json.loads(response.text, parse_float=Decimal)["collection"]
    if mode == "non_numeric_amount":
        assert [e["amount"] for e in entries].count("abc") == 1
        assert [e["amountInBaseCurrency"] for e in entries].count("abc") == 1
    else:
        known = {a["accountNumber"] for a in emu.accounts()}
        assert sum(e["account"]["accountNumber"] not in known for e in entries) == 1


def test_page_delay(emu):
    emu.faults.page_delay = 0.05
    assert body(http(emu, entries_path("2024"), pagesize=5))["collection"]


def test_stop_closes_kept_alive_connections():
    emu = EconomicEmulator(entries=20)
    emu.start()
    session = requests.Session()
    assert session.get(emu.url + "/accounts", headers=TOKENS, timeout=5).status_code == 200
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(emu.url + "/accounts", headers=TOKENS, timeout=5)


# ---------------------------------------------------------------------------------------------- hostile server
# What a hostile or broken server does, for the client's hardening tests: each test shows, with
# plain requests or a socket, that the emulator really does it. All are bounded in time and size.
FOREIGN = "http://127.0.0.2:9"  # another origin; nothing needs to listen there
hostile = pytest.mark.timeout(30)


@hostile
def test_foreign_next_page_leads_once_to_another_origin(emu):
    emu.faults.foreign_next_page = FOREIGN
    first = body(http(emu, entries_path("2024"), pagesize=100, filter="entryNumber$gt:10"))
    next_page = first["pagination"]["nextPage"]
    assert next_page == FOREIGN + "/accounting-years/2024/entries?skippages=1&pagesize=100&filter=entryNumber$gt:10"
    assert first["pagination"]["firstPage"].startswith(emu.url)  # only nextPage is foreign
    again = body(http(emu, entries_path("2024"), pagesize=100, filter="entryNumber$gt:10"))
    assert again["pagination"]["nextPage"].startswith(emu.url + "/")  # one-shot
    assert emu.faults.foreign_next_page == FOREIGN
    emu.faults.foreign_next_page = FOREIGN  # set again: acts again, even on a last page
    last = body(http(emu, entries_path("2024"), pagesize=1000))
    assert last["pagination"]["nextPage"].startswith(FOREIGN + "/accounting-years/2024/entries?skippages=1")


@hostile
def test_redirect_to_answers_the_first_entries_request_with_a_302_elsewhere(emu):
    emu.faults.redirect_to = FOREIGN
    assert http(emu, "/accounts").status_code == 200  # only entries are redirected
    response = requests.get(emu.url + entries_path("2025") + "?pagesize=10&filter=entryNumber$gt:700",
                            headers=TOKENS, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == (
        FOREIGN + "/accounting-years/2025/entries?pagesize=10&filter=entryNumber$gt:700")
    assert body(http(emu, entries_path("2025"), pagesize=10))["collection"]  # once
    assert [r.status for r in emu.requests] == [200, 302, 200]


@hostile
def test_self_loop_next_page_points_every_page_at_itself(emu):
    emu.faults.self_loop_next_page = True
    for path, params in (("/accounts", {"pagesize": 5}), (entries_path("2024"), {"pagesize": 1000}),
                         (entries_path("2024"), {"pagesize": 100, "skippages": 2})):
        page = body(http(emu, path, **params))
        assert page["pagination"]["nextPage"] == page["self"]
        assert requests.Request("GET", emu.url + path, params=params).prepare().url == page["self"]


@hostile
def test_endless_pages_serve_new_entries_for_ever_while_results_stay_true(emu):
    emu.faults.endless_pages = True
    truth = len(year_entries(emu, "2024"))
    seen, url = [], emu.url + entries_path("2024") + "?pagesize=500"
    for _ in range(5):  # the truth fits in two pages; the emulator does not stop
        page = body(requests.get(url, headers=TOKENS, timeout=10))
        assert page["pagination"]["results"] == truth
        assert len(page["collection"]) == 500
        seen += [e["entryNumber"] for e in page["collection"]]
        url = page["pagination"]["nextPage"]
    assert "skippages=5" in url
    assert len(set(seen)) == len(seen) == 2500  # every entry is new to the client
    assert emu.entry_count() == 2000  # and none was booked


@hostile
def test_retry_after_seconds_refuses_every_request(emu):
    emu.faults.retry_after_seconds = 86400
    for path in ("/accounts", entries_path("2024"), "/self"):
        response = http(emu, path)
        assert response.status_code == 429 and response.headers["Retry-After"] == "86400"
        assert response.json()["message"] == "Rate limit exceeded"
    emu.faults.retry_after_seconds = None
    assert http(emu, "/accounts").status_code == 200


@hostile
def test_drip_sends_the_body_at_the_given_rate(emu):
    emu.faults.drip_bytes_per_second = 200
    started = time.monotonic()
    with requests.get(emu.url + "/accounts", params={"pagesize": 1}, headers=TOKENS, stream=True,
                      timeout=10) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) > 100
        headers_at = time.monotonic()
        first = response.raw.read(100)
        took = time.monotonic() - headers_at
    assert len(first) == 100 and first.startswith(b'{"collection":[')
    assert headers_at - started < 3 and 0.4 <= took < 5  # 100 bytes take about 0.5 s


@hostile
def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_the_size_asked(emu):
    emu.faults.gzip_bomb_mb = 64
    with requests.get(emu.url + entries_path("2024"), params={"pagesize": 5}, headers=TOKENS,
                      stream=True, timeout=10) as response:
        assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"
        compressed = response.raw.read(2 * MIB, decode_content=False)  # bounded
        assert int(response.headers["Content-Length"]) == len(compressed)
    assert len(compressed) < 200_000
    inflate, size, tail, data = zlib.decompressobj(31), 0, b"", compressed
    while data:  # in 1 MiB steps, never holding the 64 MiB
        out = inflate.decompress(data, MIB)
        size, tail, data = size + len(out), (tail + out)[-20_000:], inflate.unconsumed_tail
    assert inflate.eof and size == 64 * MIB
    page = json.loads(tail)  # spaces, then the page: valid JSON once inflated
    assert [e["entryNumber"] for e in page["collection"]] == [
        e["entryNumber"] for e in year_entries(emu, "2024")][:5]
    emu.faults.gzip_bomb_mb = None
    assert "Content-Encoding" not in http(emu, entries_path("2024")).headers


@hostile
def test_huge_page_is_valid_json_of_the_size_asked(emu):
    normal = body(http(emu, entries_path("2024"), pagesize=10))
    emu.faults.huge_page_mb = 8
    response = http(emu, entries_path("2024"), pagesize=10)
    assert int(response.headers["Content-Length"]) == len(response.content) == 8 * MIB
    assert body(response) == normal
    assert len(http(emu, "/accounts").content) < MIB  # only entries pages


@hostile
def test_truncate_body_promises_more_than_it_sends_then_closes(emu):
    emu.faults.truncate_body = True
    with socket.create_connection(("127.0.0.1", int(emu.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"GET /accounts HTTP/1.1\r\nHost: emulator\r\nX-AppSecretToken: emu-app-secret\r\n"
                     b"X-AgreementGrantToken: emu-grant\r\n\r\n")
        received = b""
        while len(received) < 10 * MIB:
            chunk = sock.recv(65536)
            if not chunk:  # the server closed the connection
                break
            received += chunk
    head, _, sent = received.partition(b"\r\n\r\n")
    promised = int(re.search(rb"Content-Length: (\d+)", head)[1])
    assert head.startswith(b"HTTP/1.1 200") and 0 < len(sent) < promised
    with pytest.raises(requests.RequestException):
        http(emu, "/accounts")


@hostile
def test_https_with_a_certificate_trusted_through_requests_ca_bundle(monkeypatch):
    emu = EconomicEmulator(entries=20)
    emu.tls = True
    with emu:
        assert emu.url.startswith("https://127.0.0.1:") and os.path.exists(emu.ca_file)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(requests.exceptions.SSLError):  # not trusted by default
            requests.get(emu.url + "/accounts", headers=TOKENS, timeout=10)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)
        assert requests.get(emu.url + "/accounts", headers=TOKENS, timeout=10).status_code == 200
        port = emu.url.rsplit(":", 1)[1]
        assert requests.get(f"https://localhost:{port}/self", headers=TOKENS, timeout=10).ok
        strict = ssl.create_default_context(cafile=emu.ca_file)
        strict.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: still accepted
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            with strict.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        ca_file = emu.ca_file
    assert not os.path.exists(ca_file)


# ---------------------------------------------------------------------------------------------- scale
def test_a_million_entries_start_at_once_and_serve_the_last_year_with_little_memory():
    tracemalloc.start()
    try:
        with EconomicEmulator(entries=1_000_000) as emu:
            count = body(http(emu, entries_path("2026"), pagesize=1))["pagination"]["results"]
            assert 300_000 < count < 400_000
            last_page = (count - 1) // 1000
            page = body(http(emu, entries_path("2026"), pagesize=1000, skippages=last_page,
                             sort="entryNumber"))
            assert page["collection"][-1]["entryNumber"] == 1_000_000
            assert "nextPage" not in page["pagination"]
            tail = body(http(emu, entries_path("2026"), pagesize=1000,
                             filter="entryNumber$gt:999000", sort="entryNumber"))
            assert [e["entryNumber"] for e in tail["collection"]] == list(range(999_001, 1_000_001))
            by_date = body(http(emu, entries_path("2026"), pagesize=1000, skippages=200))
            assert len(by_date["collection"]) == 1000
            _, peak = tracemalloc.get_traced_memory()
        assert peak < 50 * 1024 * 1024
    finally:
        tracemalloc.stop()
