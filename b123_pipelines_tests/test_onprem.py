"""On-premise tenants through the DataQueryService agent: the reference agent (emulators/onprem.py)
over real HTTPS, serving an SQLite books file the tests write; synced end to end through Dagster on
SQLite and PostgreSQL. Each of the manual's checklist faults fails the update with its own words,
loses nothing already loaded, and is named by the connection doctor alone."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import requests
import sqlalchemy as sa
from b123_emulators.onprem import Books, OnPremAgent
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from b123_pipelines import doctor, sync
from b123_pipelines import tables as t
from b123_pipelines.connectors import onprem
from b123_pipelines.connectors.kit.auth import SIGNATURE_HEADERS, signature
from b123_pipelines.errors import ConfigurationError
from b123_pipelines.runner import run_sync
from b123_pipelines.sync import load_cursor
from b123_pipelines.tenants import add_tenant, get_tenant, open_connector, store_credentials
from b123_pipelines.update import RunInfo, open_update
from b123_pipelines_tests.helpers import entry_ids, last_run

KEY = "dqs-shared-key-SENTINEL-7c41e9"
WHO = "Tenant 'kaelder' (on-premise (DataQueryService))"
SQLITE = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def fast_connect(monkeypatch):
    # The agent's connect timeout is 3 s in production; a dropped port needs less to show here.
    monkeypatch.setattr(onprem, "CONNECT_TIMEOUT", 0.5)


@pytest.fixture
def books(tmp_path):
    return Books.create(tmp_path / "kaelder.db", entries=600, drafts=6)


@pytest.fixture
def agent(books, monkeypatch):
    with OnPremAgent(books.path, KEY) as dqs:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", dqs.trust_file)  # trust its certificate, the standard way
        yield dqs


def connection(agent, key: str = KEY) -> dict:
    return {"host": "127.0.0.1", "port": agent.port, "shared_key": key}


@pytest.fixture
def kaelder(engine, vault, agent):
    return add_tenant(engine, vault, "kaelder", "onprem", "Kælder A/S", connection(agent))


def sums(engine, *columns: str, table=t.transactions) -> dict:
    c = table.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*[c[n] for n in columns], sa.func.sum(c.amount))
                            .where(c.tenant_id == "kaelder").group_by(*[c[n] for n in columns]))
        return {(tuple(r[:-1]) if len(columns) > 1 else r[0]): r[-1] for r in rows}


def exact(engine, books: Books) -> None:
    """Per account and month, and per dimension value, to the øre: the entries and the actuals."""
    truth = {k: v for k, v in books.sums_by_account_month().items()}
    for table in (t.transactions, t.budget_actuals):
        assert sums(engine, "account_number", "period", table=table) == truth
        assert sums(engine, "dimension_1", table=table) == books.sums_by_dimension(1)
        assert sums(engine, "dimension_2", table=table) == books.sums_by_dimension(2)


def vouchers(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.transactions.c.voucher).where(
            t.transactions.c.tenant_id == "kaelder")).scalars())


def _check_passed(name: str) -> bool:
    record = DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey(["onprem", "transactions"]), name)])
    return next(iter(record.values())).status.value == "SUCCEEDED"


# ---------------------------------------------------------------------------------------------------
def test_an_onpremise_tenant_syncs_end_to_end_through_the_agent(env, engine, books, agent, kaelder):
    first = run_sync("kaelder", echo=None)

    assert first.ok, first.message
    exact(engine, books)
    assert len(entry_ids(engine, "kaelder")) == books.entry_count() == 600
    assert load_cursor(engine, "kaelder") == {"entry": 600}
    with engine.connect() as conn:
        accounts = conn.execute(sa.select(sa.func.count()).select_from(t.accounts)).scalar()
        slots = dict(conn.execute(sa.select(t.dimension_values.c.code, t.dimension_values.c.slot)).all())
    assert accounts == 45 and slots["SALG"] == 1 and slots["PROJ"] == 2
    drafts = {voucher for voucher, *_ in books.drafts()}
    assert drafts and not drafts & vouchers(engine)
    assert _check_passed("draft_exclusion") and _check_passed("row_counts")

    # Posted after the cursor: two in the latest year, and one voucher back-dated into last February.
    new = books.post(4) + books.post(2, on=dt.date(2025, 2, 3))
    books.add_drafts(2)
    again = run_sync("kaelder", echo=None)

    assert again.ok, again.message
    assert last_run(engine, "kaelder")["transactions_fetched"] == 6
    assert entry_ids(engine, "kaelder") == list(range(1, 601)) + new
    exact(engine, books)
    assert not {voucher for voucher, *_ in books.drafts()} & vouchers(engine)
    requests_for_entries = [r for r in agent.requests if r.path == "/v1/entries"]
    assert requests_for_entries[-1].query["$filter"] == "entry gt 600"


# ---------------------------------------------------------------------------------------------------
# The manual's checklist, one fault at a time: (how to cause it, the doctor's check, words of the message)
FAULTS = {
    "agent stopped": (lambda a, b, tmp: setattr(a, "mode", "stopped"), "onprem.port",
                      ["connection was refused", "DataQueryService is not running", "DQS Admin", "Start button"]),
    "port dropped by a firewall": (lambda a, b, tmp: setattr(a, "mode", "firewall"), "onprem.port",
                                   ["no answer within", "firewall", "Open port"]),
    "port held by MSMQ": (lambda a, b, tmp: setattr(a, "mode", "msmq"), "onprem.port",
                          ["something other than DataQueryService", "Message Queuing", "does not speak TLS"]),
    "port held by another web service": (lambda a, b, tmp: setattr(a, "mode", "foreign_http"), "onprem.port",
                                         ["something other than DataQueryService", "Microsoft-HTTPAPI"]),
    "clock off": (lambda a, b, tmp: setattr(a, "clock_offset", -7 * 60), "onprem.clock",
                  ["clock is 7 minutes behind", "Set the clock"]),
    "licence expired": (lambda a, b, tmp: b.set_licence(dt.date(2025, 12, 31)), "onprem.licence",
                        ["licence of Microsoft Dynamics C5 expired on 2025-12-31", "Renew the licence"]),
    "password on the accounting file": (lambda a, b, tmp: b.set_password("hemmeligt"), "onprem.password",
                                        ["accounting file has a password", "DQS Admin"]),
    "database moved": (lambda a, b, tmp: b.move(tmp / "flyttet.db"), "onprem.database",
                       ["no accounting database at", "moved", "new place"]),
    "message at login": (lambda a, b, tmp: b.set_login_message("Husk årsafslutning 2025"), "onprem.login_message",
                         ["shows a message as soon as one logs in", "Husk årsafslutning 2025"]),
    "integration user missing": (lambda a, b, tmp: b.remove_user("BUDGET123"), "onprem.user",
                                 ["integration's user BUDGET123 is not among them", "2 user(s)"]),
    "customised tables": (lambda a, b, tmp: b.customise("LedTrans", rename=("AmountMST", "BeloebMST")),
                          "onprem.customised", ["LedTrans.AmountMST missing", "customised"]),
}


def _load_without_dagster(engine, vault) -> None:
    """The first load of a fault test, by the phases themselves (a Dagster run costs seconds): the
    update that meets the fault is a real run."""
    opener = lambda e, tn: open_connector(e, vault, tn)  # noqa: E731
    with open_update(engine, opener, "kaelder", RunInfo(f"first-{uuid.uuid4()}"), echo=lambda _: None) as update:
        for load in (sync.sync_accounts, sync.sync_dimensions, sync.sync_transactions):
            load(engine, update.connector, update.run_id, update.log)
        sync.rebuild_actuals(engine, "kaelder", update.log)


def _doctor(engine, vault, tenant_id="kaelder") -> doctor.Report:
    return doctor.examine(engine, get_tenant(engine, tenant_id),
                          lambda e, tn: open_connector(e, vault, tn, doctor.DOCTOR_HTTP))


@SQLITE
@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_checklist_fault_fails_the_update_in_plain_words_and_the_doctor_names_it_alone(
        empty_database_url, env, engine, vault, books, agent, kaelder, tmp_path, fault):
    cause, check, words = FAULTS[fault]
    _load_without_dagster(engine, vault)
    loaded = entry_ids(engine, "kaelder")
    actuals = sums(engine, "account_number", "period", "dimension_1", table=t.budget_actuals)
    assert _doctor(engine, vault).ok
    books.post(4)
    cause(agent, books, tmp_path)

    started = time.monotonic()
    outcome = run_sync("kaelder", echo=None)

    assert not outcome.ok
    assert outcome.message.startswith(WHO), outcome.message
    for word in words:
        assert word in outcome.message, outcome.message
    assert time.monotonic() - started < 30  # a dead port fails fast, not after a minute of retries
    assert last_run(engine, "kaelder")["message"] == outcome.message
    assert entry_ids(engine, "kaelder") == loaded
    assert sums(engine, "account_number", "period", "dimension_1", table=t.budget_actuals) == actuals
    assert not get_tenant(engine, "kaelder").awaiting_credentials  # none of these is the key's fault

    report = _doctor(engine, vault)
    assert [f.check for f in report.findings if f.failed] == [check], [f.text("en") for f in report.findings]
    assert report.exit_code == 1
    # Every check before the failing one was made and passed; none after it is claimed to have failed.
    checks = [f.check for f in report.findings]
    assert all(f.status == "ok" for f in report.findings[:checks.index(check)])


@SQLITE
def test_once_the_fault_is_mended_the_next_update_resumes_from_the_cursor(empty_database_url, env, engine, books, agent, kaelder):
    assert run_sync("kaelder", echo=None).ok
    new = books.post(6)
    agent.clock_offset = 9 * 60
    assert not run_sync("kaelder", echo=None).ok

    agent.clock_offset = 0
    resumed = run_sync("kaelder", echo=None)

    assert resumed.ok, resumed.message
    assert last_run(engine, "kaelder")["transactions_fetched"] == 6
    assert entry_ids(engine, "kaelder")[-6:] == new
    exact(engine, books)


@SQLITE
def test_a_failed_update_gets_the_doctors_verdict_when_it_names_another_cause(empty_database_url, env, engine, books, agent, kaelder, tmp_path):
    # The agent stumbles with 500s on the chart of accounts (three tries), and the database was moved:
    # the error says what happened, the doctor's quick check says why.
    agent.faults.server_errors(3, status=500)
    books.move(tmp_path / "flyttet.db")

    started = time.monotonic()
    outcome = run_sync("kaelder", echo=None)

    assert not outcome.ok
    assert "answered HTTP 500 on /v1/accounts" in outcome.message, outcome.message
    # The verdict in the tenant's locale (da), after the error's own words.
    assert ("Forbindelsestjek: Regnskabets database: agenten finder ingen regnskabsdatabase i "
            f"{tmp_path / 'kaelder.db'}") in outcome.message, outcome.message
    assert time.monotonic() - started < 30


def test_the_wrong_key_is_refused_and_the_tenant_waits_for_the_right_one(env, engine, vault, agent):
    add_tenant(engine, vault, "kaelder", "onprem", "Kælder A/S", connection(agent, "not-the-key-0123456789"))

    outcome = run_sync("kaelder", echo=None)

    assert not outcome.ok and "the key stored in budget123 is not the agent's" in outcome.message
    assert get_tenant(engine, "kaelder").awaiting_credentials
    assert [f.check for f in _doctor(engine, vault).findings if f.failed] == ["onprem.key"]
    store_credentials(engine, vault, "kaelder", connection(agent))
    assert run_sync("kaelder", echo=None).ok


# ---------------------------------------------------------------------------------------------------
# The agent itself: signatures, the window, replays (with requests, signed by the kit's own function).
def _signed(agent, path: str, key: str = KEY, at: float | None = None, nonce: str = "n-0001") -> dict:
    timestamp = str(int(at if at is not None else time.time()))
    return dict(zip(SIGNATURE_HEADERS, (timestamp, nonce, signature(key.encode(), "GET", path, timestamp, nonce, b""))))


def _refusal(response) -> str:
    assert response.status_code == 401 and response.headers["X-DQS-Agent"]
    return response.json()["error"]["code"]


def test_the_agent_accepts_a_signed_request_once_within_its_window_and_with_the_key(agent):
    url = agent.url + "/v1/status"
    headers = _signed(agent, "/v1/status")

    first = requests.get(url, headers=headers, verify=agent.trust_file)
    replayed = requests.get(url, headers=headers, verify=agent.trust_file)
    stale = requests.get(url, headers=_signed(agent, "/v1/status", at=time.time() - 600, nonce="n-0002"),
                         verify=agent.trust_file)
    wrong_key = requests.get(url, headers=_signed(agent, "/v1/status", key="another-key-0123456789", nonce="n-0003"),
                             verify=agent.trust_file)
    other_path = requests.get(agent.url + "/v1/accounts", headers=_signed(agent, "/v1/status", nonce="n-0004"),
                              verify=agent.trust_file)
    unsigned = requests.get(url, verify=agent.trust_file)

    assert first.status_code == 200 and first.json()["agent"]["name"] == "DataQueryService"
    assert first.headers["X-DQS-Proof"] == onprem.response_proof(KEY.encode(), 200, "n-0001")
    assert _refusal(replayed) == "replayed"
    assert _refusal(stale) == "clock_skew"
    assert stale.json()["error"]["window_seconds"] == 300 and stale.json()["error"]["agent_time"]
    assert _refusal(wrong_key) == "bad_signature"
    assert _refusal(other_path) == "bad_signature"  # the path and query are signed
    assert _refusal(unsigned) == "unsigned"
    for refused in (replayed, stale, wrong_key, other_path, unsigned):
        assert "X-DQS-Proof" not in refused.headers


def test_the_key_never_travels_nor_appears_in_logs_events_or_tables(env, engine, vault, books, agent, kaelder, capsys):
    ok = run_sync("kaelder", echo=print)
    agent.clock_offset = 600
    failed = run_sync("kaelder", echo=print)
    agent.clock_offset = 0
    report = _doctor(engine, vault)
    agent.mode = "msmq"
    verdict = run_sync("kaelder", echo=print)

    assert ok.ok and not failed.ok and not verdict.ok and report.ok
    sent = " ".join(str(h) for h in agent.received_headers)
    assert agent.received_headers and KEY not in sent
    written = [capsys.readouterr().out, "\n".join(report.lines()), ok.message, failed.message, verdict.message]
    with engine.connect() as conn:
        for table in t.all_tables():
            if table.name != "credentials":  # the encrypted one
                written += [str(row) for row in conn.execute(sa.select(table))]
    instance = DagsterInstance.get()
    for run_id in (ok.run_id, failed.run_id, verdict.run_id):
        for record in instance.all_logs(run_id):
            written.append(record.user_message or "")
            written.append(str(record.dagster_event.event_specific_data) if record.dagster_event else "")
        written.append(str(instance.get_run_by_id(run_id).tags))
    text = "\n".join(written)
    assert "DataQueryService" in text and KEY not in text and KEY[:12] not in text


def test_the_connection_settings_are_checked_without_showing_the_key(env, engine, vault):
    for bad, words in [({"host": "https://regnskab.local", "shared_key": KEY}, "host name or IP address alone"),
                       ({"host": "regnskab.local", "port": 70000, "shared_key": KEY}, "port"),
                       ({"host": "regnskab.local", "shared_key": "kort-SENTINEL"}, "at least 16 characters"),
                       ({"host": "regnskab.local", "shared_key": KEY, "tls": False}, "tls")]:
        with pytest.raises(ConfigurationError) as refused:
            add_tenant(engine, vault, "kaelder", "onprem", "Kælder A/S", bad)
        assert words in refused.value.message and "SENTINEL" not in refused.value.message
    tenant = add_tenant(engine, vault, "kaelder", "onprem", "Kælder A/S", {"host": "Regnskab.Local", "shared_key": KEY})
    with engine.connect() as conn:
        stored = conn.execute(sa.select(t.connection_settings.c.settings)).scalar()
    assert stored == {"host": "regnskab.local", "port": 2103} and tenant.system == "onprem"


@SQLITE
def test_an_agent_failing_on_its_status_is_not_blamed_on_the_key(empty_database_url, env, engine, vault, agent, kaelder):
    agent.faults.server_errors(10, status=500)

    report = _doctor(engine, vault)

    assert [f.check for f in report.findings if f.failed] == ["onprem.status"]
    assert "HTTP 500" in report.first_failure.text("en")
    assert not any(f.credentials is False for f in report.findings)
