"""The Uniconta emulator's shapes, refusals and call counter, over real HTTPS (no Dagster: quick)."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from b123_emulators.uniconta import UnicontaEmulator


@pytest.fixture(scope="module")
def emu():
    with UnicontaEmulator(entries=400, seed=2, page_size=50) as server:
        yield server


def get(emu, entity, auth=None, company=None, **params):
    return requests.get(f"{emu.url}/odata/{company or emu.company_id}/{entity}", params=params,
                        auth=auth or (emu.login, emu.password), verify=emu.ca_file, timeout=10)


def test_posted_lines_by_row_id_and_date_are_paged_with_a_link_past_the_page_limit(emu):
    ids = emu.row_ids()
    body = get(emu, "GLTransClient", **{"$filter": f"RowId gt {ids[9]} and Date ge datetime'2025-01-01T00:00:00'",
                                        "$orderby": "RowId", "$top": "1000"}).json()
    assert len(body["value"]) == 50 and "$skip=50" in body["@odata.nextLink"]
    assert all(r["RowId"] > ids[9] and r["Date"] >= "2025-01-01" and r["JournalPostedId"] for r in body["value"])
    assert [r["RowId"] for r in body["value"]] == sorted(r["RowId"] for r in body["value"])
    short = get(emu, "GLTransClient", **{"$skip": "395", "$top": "10"}).json()
    assert [r["RowId"] for r in short["value"]] == ids[395:] and "@odata.nextLink" not in short
    accounts = get(emu, "GLAccountClient", **{"$orderby": "Account desc"}).json()["value"]
    assert accounts[0]["Account"] == "6990" and {"Header", "Sum", "Revenue", "Expense"} <= {a["AccountType"] for a in accounts}
    assert get(emu, "GLTransClient", **{"$filter": "Amount gt 5"}).status_code == 400


def test_the_company_labels_its_dimensions_and_an_unused_one_has_no_values(emu):
    company = get(emu, "CompanyClient").json()["value"][0]
    assert company["CompanyId"] == emu.company_id
    assert [company[f"_Dim{n}"] for n in range(1, 6)] == ["Afdeling", "Projekt", "Formål", None, None]
    assert get(emu, "GLDimType4Client").json() == {"value": []}
    assert {"KeyStr", "Name", "Blocked", "RowId"} == set(get(emu, "GLDimType2Client").json()["value"][0])


@pytest.mark.parametrize("auth, company, status, code", [
    (("budget123", "Uniconta-emulator-pw"), None, 401, "Unauthorized"),  # not written 00<company>/<user>
    (("0040117/budget123", "wrong"), None, 401, "Unauthorized"),
    (("0099999/budget123", "Uniconta-emulator-pw"), 99999, 404, "CompanyNotFound"),
    (("0012345/budget123", "Uniconta-emulator-pw"), None, 403, "Forbidden"),  # a login for another company
])
def test_refusals(emu, auth, company, status, code):
    response = get(emu, "GLAccountClient", auth=auth, company=company)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_the_daily_call_counter_refuses_with_when_it_resets_and_starts_again_next_day(emu):
    emu.new_day()
    emu.daily_quota, emu.quota_reset_at = 2, dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5)
    try:
        assert [get(emu, "CompanyClient").status_code for _ in range(4)] == [200, 200, 429, 429]
        refused = get(emu, "CompanyClient")
        assert 5 * 3600 - 60 < int(refused.headers["Retry-After"]) <= 5 * 3600 + 1
        assert "daily limit of 2 server calls" in refused.json()["error"]["message"]
        assert emu.calls_today() == 2  # refused calls are not counted
        emu.new_day()
        assert get(emu, "CompanyClient").status_code == 200 and emu.calls_today() == 1
    finally:
        emu.daily_quota, emu.quota_reset_at = 5000, None


def test_postings_get_rising_row_ids_whatever_their_date_and_drafts_have_no_posting(emu):
    before = emu.row_ids()
    back = emu.post(2, date=dt.date(2024, 1, 10))
    journal = emu.add_journal_lines(1)
    posted = emu.post_journal()
    assert min(back) > max(before) and min(posted) > max(back)
    lines = {r["RowId"]: r for r in get(emu, "GLTransClient", **{"$filter": f"RowId gt {max(before)}"}).json()["value"]}
    assert [lines[r]["Date"] for r in back] == ["2024-01-10T00:00:00"] * 2
    assert lines[back[0]]["JournalPostedId"] != lines[posted[0]]["JournalPostedId"]
    assert {lines[r]["Voucher"] for r in posted} >= {line["Voucher"] for line in journal}
    emu.add_journal_lines(1)
    emu.faults.leak_drafts = True
    try:
        leaked = get(emu, "GLTransClient", **{"$filter": f"RowId gt {max(posted)}"}).json()["value"]
    finally:
        emu.faults.leak_drafts = False
    assert len(leaked) == 2 and all(r["JournalPostedId"] is None for r in leaked)
