"""When things go wrong: revoked grant, drafts, bad data, a killed sync. Nothing lost, nothing doubled."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from b123_pipelines import tables as t
from b123_pipelines.checks import draft_exclusion
from b123_pipelines.resources import AccountingSystems
from b123_pipelines.runner import run_sync
from b123_pipelines.tenants import get_tenant, store_credentials
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.helpers import count, entry_ids, last_run, nonzero, warehouse_sums

SECRETS = ("app-secret-SENTINEL-1", "grant-token-SENTINEL-2")


def _everything_written(engine, run_ids, cli_output: str = "") -> str:
    """Every text a person or a log could see: our tables, Dagster's event log, the CLI's output."""
    texts = [cli_output]
    with engine.connect() as conn:
        for table in (t.sync_runs, t.sync_log, t.tenants, t.connection_settings, t.account_changes):
            texts += [str(dict(row)) for row in conn.execute(sa.select(table)).mappings()]
    instance = DagsterInstance.get()
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            texts.append(record.user_message or "")
            texts.append(str(record.dagster_event.event_specific_data) if record.dagster_event else "")
        texts.append(str(instance.get_run_by_id(run_id).tags))
    return "\n".join(texts)


def test_revoked_grant_is_explained_keeps_data_and_new_token_resumes(env, engine, vault, emulator, tenant):
    first = run_sync("acme", echo=None)
    loaded = entry_ids(engine, "acme")
    actuals = warehouse_sums(engine, "acme", t.budget_actuals)
    emulator.book_entries(4)
    emulator.faults.revoked = True

    cli = subprocess.run([sys.executable, "-m", "b123_pipelines.cli", "sync", "acme"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=240)

    assert cli.returncode == 1
    run = last_run(engine, "acme")
    assert run["status"] == "failed"
    for text in (run["message"], cli.stderr):
        assert "Tenant 'acme' (e-conomic)" in text
        assert "access ID" in text and "Fetch new token automatically" in text
        assert "Global settings >> Integration settings" in text
    assert entry_ids(engine, "acme") == loaded
    assert warehouse_sums(engine, "acme", t.budget_actuals) == actuals
    assert get_tenant(engine, "acme").awaiting_credentials
    written = _everything_written(engine, [first.run_id, run["run_id"]], cli.stdout + cli.stderr)
    for secret in SECRETS:
        assert secret not in written

    emulator.faults.revoked = False
    store_credentials(engine, vault, "acme", economic_connection(emulator))
    resumed = run_sync("acme", echo=None)

    assert resumed.ok and not get_tenant(engine, "acme").awaiting_credentials
    assert last_run(engine, "acme")["transactions_fetched"] == 4
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())


def test_forbidden_explains_the_apps_role(env, engine, emulator, tenant):
    emulator.faults.forbidden = True

    outcome = run_sync("acme", echo=None)

    assert not outcome.ok
    assert "role" in outcome.message and "Tenant 'acme' (e-conomic)" in outcome.message


def test_drafts_are_never_loaded_and_the_check_proves_it(env, engine, emulator, tenant):
    drafts = emulator.draft_entries()
    assert drafts
    assert run_sync("acme", echo=None).ok
    vouchers = {str(d["voucher"]["voucherNumber"]) for d in drafts}
    with engine.connect() as conn:
        loaded_vouchers = set(conn.execute(sa.select(t.transactions.c.voucher)).scalars())
    assert not vouchers & loaded_vouchers
    instance = DagsterInstance.get()
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey(["economic", "transactions"]), "draft_exclusion")])
    record = next(iter(check.values()))
    assert record.status.value == "SUCCEEDED"

    # Force one draft in, as a broken loader would: the check must fail and name it.
    draft = drafts[0]
    day, amount = dt.date.fromisoformat(draft["date"]), Decimal(str(draft["amountBaseCurrency"]))
    with engine.begin() as conn:
        conn.execute(t.transactions.insert().values(
            tenant_id="acme", entry_id="forced-draft", account_number=str(draft["account"]["accountNumber"]),
            posting_date=day, period=day.replace(day=1), amount=amount, currency="DKK",
            amount_in_currency=amount, voucher=str(draft["voucher"]["voucherNumber"]), loaded_run_id="forced"))
    connector = AccountingSystems(secret_key=env["B123_SECRET_KEY"]).open(engine, get_tenant(engine, "acme"))
    result = draft_exclusion(engine, connector)
    assert not result.passed and "forced-draft" in result.metadata["loaded_drafts"].value


def test_a_source_that_leaks_drafts_fails_the_blocking_check(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    actuals = warehouse_sums(engine, "acme", t.budget_actuals)
    emulator.add_draft(2)
    emulator.faults.leak_drafts = True

    outcome = run_sync("acme", echo=None)

    assert not outcome.ok
    assert "draft_exclusion" in outcome.message and "were not changed" in outcome.message
    assert warehouse_sums(engine, "acme", t.budget_actuals) == actuals


@pytest.mark.parametrize("corrupt, words", [
    ("malformed_json", "not valid JSON"),
    ("non_numeric_amount", "not a number"),
    ("unknown_account", "not in the chart of accounts"),
    ("missing_field", "without the field 'account'"),
    # Values that do not fit the warehouse: the entry is named with what is wrong (issue 11, item 5).
    ("huge_amount", "amount 12345678901234567.89 is beyond what an amount can be"),
    ("amount_1e400", "amount 1E+400 is beyond what an amount can be"),
    ("long_voucher", "its voucher is 5000 characters long (at most 64)"),
    ("nul_in_text", "its text contains a NUL character"),
    ("fractional_entry_number", "sent entry 3000.5 with a value that is not valid: entryNumber 3000.5 is not a whole"),
    ("not_an_object", "sent an entry that is not a JSON object ([1, 2])"),
])
def test_bad_source_data_is_refused_and_leaves_the_warehouse_as_it_was(env, engine, emulator, tenant, corrupt, words):
    assert run_sync("acme", echo=None).ok
    before = (entry_ids(engine, "acme"), warehouse_sums(engine, "acme", t.budget_actuals))
    emulator.book_entries(4)
    emulator.faults.corrupt = corrupt

    outcome = run_sync("acme", echo=None)

    assert not outcome.ok
    assert "Tenant 'acme' (e-conomic)" in outcome.message and words in outcome.message
    assert (entry_ids(engine, "acme"), warehouse_sums(engine, "acme", t.budget_actuals)) == before
    emulator.faults.corrupt = None
    assert run_sync("acme", echo=None).ok
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]


def _live_progress(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_log).where(t.sync_log.c.page.is_not(None))
                            .order_by(t.sync_log.c.line_id.desc()).limit(1)).mappings().first()


def test_a_sync_killed_mid_transactions_resumes_without_gap_or_duplicate(env, engine, emulator, tenant):
    # The page with the first entry comes at once, the others late: ranges fetched side by side
    # would otherwise all be committed before the kill.
    emulator.faults.page_delay, emulator.faults.page_delay_above = 5, 1
    sync = subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", "acme"],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # The live log is readable while the update runs, and says how far it has come.
    while not (progress := _live_progress(engine)) or progress["rows_so_far"] < 1:
        assert sync.poll() is None, "the sync ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert progress["phase"] == "transactions" and progress["pages_total"] >= progress["page"] >= 1
    sync.send_signal(signal.SIGKILL)
    sync.wait()
    partial = entry_ids(engine, "acme")
    assert 0 < len(partial) < emulator.entry_count()
    assert len(partial) == _live_progress(engine)["rows_so_far"]  # the cursor moved with the rows
    emulator.faults.page_delay = 0

    assert run_sync("acme", echo=None).ok

    ids = entry_ids(engine, "acme")
    assert ids == [int(e["entryNumber"]) for e in emulator.posted_entries()]
    assert len(ids) == len(set(ids))
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())


def _latest_check(check_name: str, asset: str):
    instance = DagsterInstance.get()
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey(["economic", asset]), check_name)])
    return next(iter(records.values()))


def test_reconciliation_names_the_account_and_year_that_differ(env, engine, emulator, tenant):
    assert run_sync("acme", echo=None).ok
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.transactions).limit(1)).mappings().one()
        conn.execute(t.transactions.update().where(t.transactions.c.entry_id == row["entry_id"])
                     .values(amount=row["amount"] + Decimal("0.01")))
        conn.execute(t.dirty_periods.insert().values(tenant_id="acme", period=row["period"]))

    assert run_sync("acme", echo=None).ok  # the figures stand; the check tells the data team

    record = _latest_check("reconciliation", "budget_actuals")
    assert record.status.value == "FAILED"
    evaluation = record.event.dagster_event.event_specific_data
    year = str(row["posting_date"].year)  # the emulator's accounting years are calendar years
    assert year in emulator.years()
    assert f"account {row['account_number']}, year {year}" in evaluation.metadata["differences"].value


def test_actuals_check_catches_actuals_that_do_not_add_up(env, engine, emulator, tenant):
    from b123_pipelines.checks import actuals_match_transactions

    assert run_sync("acme", echo=None).ok
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.budget_actuals).limit(1)).mappings().one()
        conn.execute(t.budget_actuals.update().where(
            t.budget_actuals.c.account_number == row["account_number"], t.budget_actuals.c.period == row["period"],
            t.budget_actuals.c.dimension_1 == row["dimension_1"]).values(amount=row["amount"] - Decimal("0.01")))

    result = actuals_match_transactions(engine, "acme", [row["period"]])

    assert not result.passed and f"account {row['account_number']}, {row['period']:%Y-%m}" in result.metadata["differences"].value
