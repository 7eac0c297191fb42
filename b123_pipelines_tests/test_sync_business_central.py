"""Business Central end to end: the emulator's Entra ID and BC API over real HTTPS → MSAL → Dagster job
→ warehouse, on SQLite and PostgreSQL. A small company and pages of 50 keep the file quick."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa
from b123_emulators.business_central import BusinessCentralEmulator
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from b123_pipelines import cli
from b123_pipelines import tables as t
from b123_pipelines.connectors import business_central
from b123_pipelines.errors import ConfigurationError, CredentialsRejected
from b123_pipelines.resources import AccountingSystems
from b123_pipelines.runner import run_sync
from b123_pipelines.sync import load_cursor
from b123_pipelines.tenants import add_tenant, get_tenant, remove_tenant, store_credentials
from b123_pipelines.token_caches import VaultTokenStore
from b123_pipelines_tests.helpers import count, entry_ids, kill_sync_after, last_run, nonzero, overlapping, warehouse_sums

ENTRIES, PAGE = 1200, 50
SECRET, NEW_SECRET = "bc-secret-SENTINEL-5", "bc-secret-SENTINEL-6"
CRONUS, NORDLYS = "CRONUS Danmark A/S", "Nordlys ApS"
WHO = "Tenant 'cronus' (Business Central)"
SLOTS = {"AFDELING": 1, "PROJEKT": 2, "OMRÅDE": 3}  # global 1 and 2, shortcut 3 (generalLedgerSetup)
# Tokens, refusals and retries do not depend on the database: those tests run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


@pytest.fixture
def bc(env, monkeypatch):
    monkeypatch.setattr(business_central, "PAGE_SIZE", PAGE)  # Prefer: odata.maxpagesize=50
    with BusinessCentralEmulator(entries=ENTRIES, seed=5, client_secret=SECRET, companies=(CRONUS, NORDLYS)) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)  # trust its certificate, the standard way
        yield emu


@pytest.fixture
def cronus(engine, vault, bc):
    return add_tenant(engine, vault, "cronus", "business_central", "Cronus A/S", bc.connection(CRONUS))


def assert_exact(engine, bc, tenant: str = "cronus", company: str = CRONUS) -> None:
    """Per account and month, in transactions and actuals, and per value of each slotted dimension."""
    truth = nonzero(bc.sums_by_account_month(company))
    assert nonzero(warehouse_sums(engine, tenant)) == truth
    assert nonzero(warehouse_sums(engine, tenant, t.budget_actuals)) == truth
    for code, slot in SLOTS.items():
        column = t.budget_actuals.c[f"dimension_{slot}"]
        with engine.connect() as conn:
            loaded = dict(conn.execute(sa.select(column, sa.func.sum(t.budget_actuals.c.amount)).where(
                t.budget_actuals.c.tenant_id == tenant).group_by(column)).all())
        assert nonzero(loaded) == nonzero(bc.sums_by_dimension(code, company)), code


def vouchers(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.transactions.c.voucher).where(t.transactions.c.tenant_id == "cronus")).scalars())


def entry_pages(bc) -> list:
    return [r for r in bc.requests if r.path.endswith("/generalLedgerEntries") and r.query.get("$top") != "1"]


def stored_cache(engine, vault, tenant: str) -> str:
    with engine.connect() as conn:
        ciphertext = conn.execute(sa.select(t.token_caches.c.ciphertext).where(
            t.token_caches.c.tenant_id == tenant)).scalar_one()
    assert "access_token" not in ciphertext.lower() and "secret" not in ciphertext.lower()
    return vault.decrypt(ciphertext)["msal"]


def everything_written(engine, run_ids) -> str:
    """Every row of every table (app, warehouse, operations) and Dagster's events of the runs."""
    texts = []
    with engine.connect() as conn:
        for table in t.all_tables():
            texts += [str(tuple(row)) for row in conn.execute(sa.select(table))]
    instance = DagsterInstance.get()
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            texts += [record.user_message or "", str(record.dagster_event.event_specific_data
                                                     if record.dagster_event else "")]
        texts.append(str(instance.get_run_by_id(run_id).tags))
    return "\n".join(texts)


def test_full_sync_is_exact_and_uses_one_token_kept_encrypted(env, engine, vault, bc, cronus):
    outcome = run_sync("cronus", echo=None)

    assert outcome.ok, outcome.message
    assert_exact(engine, bc)
    assert entry_ids(engine, "cronus") == list(range(1, ENTRIES + 1))
    with engine.connect() as conn:
        slots = dict(conn.execute(sa.select(t.dimension_values.c.dimension, t.dimension_values.c.slot)
                                  .where(t.dimension_values.c.tenant_id == "cronus").distinct()).all())
        types = set(conn.execute(sa.select(t.accounts.c.account_type)).scalars())
        modified = conn.execute(sa.select(sa.func.count()).where(
            t.transactions.c.source_modified_at.is_not(None))).scalar()
    assert slots == {**SLOTS, "MEDARBEJDER": None}  # not the first two listed: the global two
    assert types == {"Posting", "Heading", "Total", "Begin Total", "End Total"}  # _x0020_ undone
    assert modified == ENTRIES
    drafts = {line["documentNumber"] for line in bc.journal_lines(CRONUS)}
    assert drafts and not drafts & vouchers(engine)  # journal lines are never figures
    pages = entry_pages(bc)
    assert len(pages) == ENTRIES // PAGE and all(p.query["$expand"] == "dimensionSetLines" for p in pages)
    # A first sync reads entry-number ranges (side by side) that tile every number once.
    bounds = sorted(tuple(int(term.split()[-1]) for term in p.query["$filter"].split(" and ")) for p in pages)
    assert bounds[0][0] == 0 and bounds[-1][1] == ENTRIES and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert last_run(engine, "cronus")["api_calls"] == len([r for r in bc.requests if "/api/" in r.path])  # not Entra's
    # One token from Entra ID for the whole run, kept for the next run as ciphertext only.
    assert len(bc.issued_tokens) == 1
    assert bc.issued_tokens[0].value in stored_cache(engine, vault, "cronus")
    checks = DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key([
        AssetCheckKey(AssetKey(["business_central", phase]), name) for phase, name in (
            ("transactions", "draft_exclusion"), ("transactions", "row_counts"),
            ("budget_actuals", "actuals_match_transactions"), ("budget_actuals", "reconciliation"))])
    assert {key.name: record.status.value for key, record in checks.items()} == {
        "draft_exclusion": "SUCCEEDED", "row_counts": "SUCCEEDED", "actuals_match_transactions": "SUCCEEDED",
        "reconciliation": "SUCCEEDED"}
    for record in checks.values():
        assert record.event.dagster_event.event_specific_data.passed, record.check_key.name


def test_next_sync_reads_changes_after_the_cursor_with_a_look_back_and_reuses_the_token(env, engine, bc, cronus):
    assert run_sync("cronus", echo=None).ok
    cursor = load_cursor(engine, "cronus")
    assert cursor["entry_number_max"] == ENTRIES
    look_back = business_central.parse_time(cursor["modified_after"]) - business_central.LOOK_BACK
    bc.clear_requests()
    journal = {line["documentNumber"] for line in bc.journal_lines(CRONUS)}
    booked = bc.book_entries(4, CRONUS) + bc.post_journals(CRONUS)  # posting turns journal lines into entries
    unposted = {line["documentNumber"] for line in bc.add_journal_lines(2, CRONUS)}

    outcome = run_sync("cronus", echo=None)

    assert outcome.ok, outcome.message
    run = last_run(engine, "cronus")
    assert run["transactions_new"] == len(booked) == 8
    assert run["transactions_fetched"] >= 8  # and what the look-back read again
    assert journal <= vouchers(engine) and not unposted & vouchers(engine)
    assert all(p.query["$filter"].startswith(f"lastModifiedDateTime gt {business_central.odata_time(look_back)} "
                                             "and lastModifiedDateTime le ") for p in entry_pages(bc))
    assert load_cursor(engine, "cronus")["entry_number_max"] == max(booked)
    assert_exact(engine, bc)
    assert len(bc.issued_tokens) == 1  # the first run's token, from the stored cache


def department_sums(engine, account: str, period) -> dict[str, Decimal]:
    ba = t.budget_actuals.c
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(ba.dimension_1, sa.func.sum(ba.amount)).where(
            ba.tenant_id == "cronus", ba.account_number == account, ba.period == period).group_by(ba.dimension_1)).all())


def test_a_corrected_dimension_replaces_the_entry_and_moves_its_posting_months_actuals(env, engine, bc, cronus):
    assert run_sync("cronus", echo=None).ok
    entry = next(e for e in map(bc.entry, range(ENTRIES // 3, ENTRIES)) if {
        line["code"]: line["valueCode"] for line in e["dimensionSetLines"]}.get("AFDELING") == "SALG")
    number, account = entry["entryNumber"], entry["accountNumber"]
    month = dt.date.fromisoformat(entry["postingDate"]).replace(day=1)
    net = Decimal(str(entry["debitAmount"])) - Decimal(str(entry["creditAmount"]))
    before = department_sums(engine, account, month)
    totals = warehouse_sums(engine, "cronus", t.budget_actuals)
    bc.correct_dimension(number, "AFDELING", "ADM", CRONUS)  # in BC today; posted months ago
    assert bc.entry(number)["lastModifiedDateTime"] > entry["lastModifiedDateTime"]

    assert run_sync("cronus", echo=None).ok

    tx = t.transactions.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(tx.dimension_1, tx.source_modified_at).where(
            tx.tenant_id == "cronus", tx.entry_id == str(number))).one()
    assert row.dimension_1 == "ADM"
    assert row.source_modified_at.strftime("%Y-%m-%dT%H:%M:%S") == bc.entry(number)["lastModifiedDateTime"][:19]
    assert count(engine, t.transactions, tenant_id="cronus") == ENTRIES  # replaced, not added
    after = department_sums(engine, account, month)
    assert after.get("SALG", 0) == before["SALG"] - net and after["ADM"] == before.get("ADM", 0) + net and net
    assert warehouse_sums(engine, "cronus", t.budget_actuals) == totals  # the account's month total stays
    assert_exact(engine, bc)


@SQLITE_ONLY
def test_a_token_that_expires_mid_sync_is_renewed_once_and_the_sync_completes(env, engine, vault, bc, cronus):
    bc.expire_tokens_after(pages=5)

    outcome = run_sync("cronus", echo=None)

    assert outcome.ok, outcome.message
    assert_exact(engine, bc)
    # One renewal, however many requests side by side were refused with the old token.
    assert len(bc.issued_tokens) == 2
    assert 1 <= [r.status for r in bc.requests].count(401) <= business_central.BusinessCentralConnector.budget.concurrent_calls
    cache = stored_cache(engine, vault, "cronus")
    assert bc.issued_tokens[1].value in cache and bc.issued_tokens[0].value not in cache


@SQLITE_ONLY
def test_msal_asks_for_a_new_token_before_the_old_one_expires(env, engine, bc, cronus):
    bc.token_lifetime = 301  # MSAL renews a token with less than five minutes left
    bc.faults.page_delay = 0.5  # the sync outlasts the token's last second before those five minutes

    outcome = run_sync("cronus", echo=None)

    assert outcome.ok, outcome.message
    assert len(bc.issued_tokens) >= 2 and 401 not in {r.status for r in bc.requests}
    assert_exact(engine, bc)


@SQLITE_ONLY
def test_two_tenants_on_the_same_entra_app_share_no_token(env, engine, vault, bc, cronus):
    add_tenant(engine, vault, "nordlys", "business_central", "Nordlys ApS", bc.connection(NORDLYS))
    assert bc.connection(CRONUS)["client_id"] == bc.connection(NORDLYS)["client_id"]

    assert run_sync("cronus", echo=None).ok
    assert run_sync("nordlys", echo=None).ok
    assert run_sync("cronus", echo=None).ok

    assert len(bc.issued_tokens) == 2
    first, second = (token.value for token in bc.issued_tokens)
    companies = {bc.books[name].id: name for name in (CRONUS, NORDLYS)}
    used = {(token, companies[company]) for token, company in bc.token_uses if company}
    assert used == {(first, CRONUS), (second, NORDLYS)}
    cronus_cache, nordlys_cache = stored_cache(engine, vault, "cronus"), stored_cache(engine, vault, "nordlys")
    assert first in cronus_cache and second not in cronus_cache
    assert second in nordlys_cache and first not in nordlys_cache
    assert_exact(engine, bc)
    assert_exact(engine, bc, "nordlys", NORDLYS)


def test_a_revoked_secret_is_explained_keeps_everything_and_a_new_secret_resumes(env, engine, vault, bc, cronus):
    first = run_sync("cronus", echo=None)
    before = (entry_ids(engine, "cronus"), warehouse_sums(engine, "cronus", t.budget_actuals))
    bc.book_entries(4, CRONUS)
    bc.revoke_secret()
    bc.expire_tokens()  # an hour later: the cached token has run out too

    outcome = run_sync("cronus", echo=None)

    assert not outcome.ok
    assert outcome.message.startswith(WHO), outcome.message
    for words in ("rejected the client secret", "AADSTS7000215", "create a new client secret",
                  "Certificates & secrets", "b123 tenant credentials", "Nothing already loaded was lost"):
        assert words in outcome.message, outcome.message
    assert get_tenant(engine, "cronus").awaiting_credentials
    assert (entry_ids(engine, "cronus"), warehouse_sums(engine, "cronus", t.budget_actuals)) == before
    written = everything_written(engine, [first.run_id, outcome.run_id])
    for secret in [SECRET] + [token.value.split(".")[-1] for token in bc.issued_tokens]:
        assert secret not in written

    store_credentials(engine, vault, "cronus", bc.connection(CRONUS, client_secret=bc.restore_secret(NEW_SECRET)))
    assert count(engine, t.token_caches, tenant_id="cronus") == 0  # new credentials, no old token
    resumed = run_sync("cronus", echo=None)

    assert resumed.ok, resumed.message
    assert not get_tenant(engine, "cronus").awaiting_credentials
    assert last_run(engine, "cronus")["transactions_new"] == 4
    assert_exact(engine, bc)
    written = everything_written(engine, [first.run_id, outcome.run_id, resumed.run_id])
    for secret in [SECRET, NEW_SECRET] + [token.value.split(".")[-1] for token in bc.issued_tokens]:
        assert secret not in written


@SQLITE_ONLY
def test_an_app_missing_from_business_central_is_explained_without_asking_for_credentials(env, engine, bc, cronus):
    bc.unregister_app()

    outcome = run_sync("cronus", echo=None)

    assert not outcome.ok and outcome.message.startswith(WHO)
    for words in ("refused budget123's app", bc.client_id, "Microsoft Entra Applications", "permission sets"):
        assert words in outcome.message, outcome.message
    assert not get_tenant(engine, "cronus").awaiting_credentials  # the fix is in BC, not new credentials
    assert [r.status for r in bc.requests if "/api/" in r.path] == [401, 401]  # renewed once, then explained

    bc.register_app()
    assert run_sync("cronus", echo=None).ok
    assert_exact(engine, bc)


@pytest.mark.parametrize("change, error, words", [
    ({"entra_tenant": "nobody.onmicrosoft.com"}, ConfigurationError,
     ["does not know the tenant 'nobody.onmicrosoft.com'", "AADSTS90002", "Tenant ID"]),
    ({"company": "CRONUS Danmark"}, ConfigurationError,
     ["no company named 'CRONUS Danmark'", f"'{CRONUS}', '{NORDLYS}'", "exactly as Business Central shows it"]),
    ({"environment": "sandbox"}, ConfigurationError, ["no environment 'sandbox'"]),
    ({"client_id": "00000000-0000-0000-0000-0000000000aa"}, CredentialsRejected,
     ["has no app with client id 00000000-0000-0000-0000-0000000000aa", "AADSTS700016"]),
], ids=["unknown_entra_tenant", "unknown_company", "unknown_environment", "unknown_client_id"])
@SQLITE_ONLY
def test_a_connection_that_points_wrong_says_which_part_and_what_to_do(env, engine, vault, bc, cronus, change, error, words):
    store_credentials(engine, vault, "cronus", bc.connection(**change))  # the first company's, changed
    connector = AccountingSystems(secret_key=env["B123_SECRET_KEY"], http_backoff=0.01).open(
        engine, get_tenant(engine, "cronus"))

    with pytest.raises(error) as raised:
        connector.check_access()

    assert raised.value.message.startswith(WHO)
    for word in words:
        assert word in raised.value.message, raised.value.message


@SQLITE_ONLY
def test_429_and_5xx_storms_are_ridden_out_with_exact_sums(env, engine, bc, cronus):
    bc.faults.rate_limit(3, retry_after=1)
    bc.faults.server_errors(2, status=503)

    outcome = run_sync("cronus", echo=None)

    assert outcome.ok, outcome.message
    statuses = [r.status for r in bc.requests]
    assert statuses.count(429) == 3 and statuses.count(503) == 2
    assert_exact(engine, bc)


@SQLITE_ONLY
def test_removing_the_tenant_or_changing_its_credentials_drops_its_token_cache(env, engine, vault, bc, cronus):
    store = VaultTokenStore(engine, vault, "cronus")
    store.save('{"AccessToken": {}}')
    assert store.load() == '{"AccessToken": {}}'
    store_credentials(engine, vault, "cronus", bc.connection(CRONUS))
    assert store.load() is None
    store.save('{"AccessToken": {}}')

    remove_tenant(engine, "cronus", keep_data=True)

    assert count(engine, t.token_caches) == 0
    store.save('{"AccessToken": {}}')  # a run still going: nothing is written for a removed tenant
    assert count(engine, t.token_caches) == 0


@SQLITE_ONLY
@pytest.mark.parametrize("field, value", [("client_id", "budget123"), ("entra_tenant", "not a tenant"),
                                          ("login_url", "http://127.0.0.1:9"), ("client_secret", "")])
def test_bad_connection_json_exits_2_naming_the_field(env, bc, capsys, field, value):
    connection = {**bc.connection(CRONUS), field: value}

    code = cli.main(["tenant", "add", "bad", "--system", "business_central", "--name", "Bad ApS",
                     "--connection", json.dumps(connection)])

    assert code == 2
    err = capsys.readouterr().err
    assert field in err and SECRET not in err


def test_a_first_sync_reads_ranges_side_by_side_resumes_after_a_kill_and_then_catches_what_changed(
        env, engine, bc, cronus):
    # The first range's page comes at once, the others late: they are asked side by side.
    bc.faults.page_delay, bc.faults.page_delay_above = 5, 1
    kill_sync_after(engine, "cronus", rows=1)
    partial = entry_ids(engine, "cronus")
    assert 0 < len(partial) < ENTRIES and partial == list(range(1, len(partial) + 1))  # whole ranges, from the first
    cursor = load_cursor(engine, "cronus")
    assert cursor["first_sync"] == {"entry_no": max(partial), "upto": ENTRIES}  # the cursor moved with the rows
    # While the first sync is unfinished, an entry it has already loaded is corrected in BC.
    changed = max(partial)
    bc.correct_dimension(changed, "AFDELING", "ADM", CRONUS)
    bc.faults.page_delay, bc.faults.latency = 0, 0.1
    bc.clear_requests()

    assert run_sync("cronus", echo=None).ok  # the first sync finishes where it stopped
    assert overlapping([p for p in entry_pages(bc) if "entryNumber gt" in p.query.get("$filter", "")])
    bc.faults.latency = 0
    assert entry_ids(engine, "cronus") == list(range(1, ENTRIES + 1))
    assert load_cursor(engine, "cronus") == {"modified_after": cursor["modified_after"], "entry_number_max": ENTRIES}
    assert run_sync("cronus", echo=None).ok  # the next update reads what changed since it began

    with engine.connect() as conn:
        dimension = conn.execute(sa.select(t.transactions.c.dimension_1).where(
            t.transactions.c.tenant_id == "cronus", t.transactions.c.entry_id == str(changed))).scalar()
    assert dimension == "ADM"
    assert count(engine, t.transactions, tenant_id="cronus") == ENTRIES
    assert_exact(engine, bc)
