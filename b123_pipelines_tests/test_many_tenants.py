"""Many tenants per run: a run over a range of tenants updates each as its own update, reports each on
its own partition, and a tenant that fails does not stop the others (on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from b123_pipelines import ranged
from b123_pipelines import tables as t
from b123_pipelines.definitions import build_definitions
from b123_pipelines.runner import local_instance
from b123_pipelines.tenants import add_tenant
from b123_pipelines_tests.conftest import economic_connection

BUDGET_ACTUALS = AssetKey(["economic", "budget_actuals"])
ROW_COUNTS = AssetCheckKey(AssetKey(["economic", "transactions"]), "row_counts")


@pytest.fixture
def tenants(engine, vault, emulator):
    """Four e-conomic tenants in partition order; 'bad' has a grant e-conomic refuses."""
    connection = economic_connection(emulator)
    for tenant in ("a", "b", "bad", "c"):
        add_tenant(engine, vault, tenant, "economic", tenant.upper(),
                   {**connection, "grant_token": "revoked"} if tenant == "bad" else connection)
    return ["a", "b", "bad", "c"]


def ranged_run(instance, first: str, last: str, starts: dict | None = None):
    job = build_definitions().resolve_job_def("economic_sync")
    config = {"ops": {"economic_update": {"config": {"starts": starts}}}} if starts else None
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=config,
                                  tags={ranged.RANGE_START_TAG: first, ranged.RANGE_END_TAG: last})


def rows(engine) -> dict:
    with engine.connect() as conn:
        return {r.tenant_id: r for r in conn.execute(sa.select(t.sync_runs))}


def _lease(engine, tenant: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_leases).where(t.sync_leases.c.tenant_id == tenant)).first()


def check_status(instance, tenant: str) -> str:
    info = instance.event_log_storage.get_asset_check_partition_info([ROW_COUNTS], partition_keys=[tenant])
    return info[0].latest_execution_status.value if info else "none"


def test_a_ranged_run_updates_each_tenant_as_its_own_update_and_names_the_one_that_failed(tenants, engine, env):
    instance = local_instance()
    instance.add_dynamic_partitions("economic_tenants", tenants)
    # A sensor's batch: 'b' lies in the range but was not started.
    starts = {"a": {"trigger": "first_login", "user_id": "anna"}, "bad": {"trigger": "first_login", "user_id": "bo"},
              "c": {"trigger": "refresh_request", "user_id": "carl"}}

    result = ranged_run(instance, "a", "c", starts)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "1 of 3 tenants failed (bad)" in failure.description and "Tenant 'bad'" in failure.description
    updates = rows(engine)
    assert set(updates) == {"a", "bad", "c"}
    assert (updates["a"].status, updates["a"].trigger, updates["a"].user_id) == ("succeeded", "first_login", "anna")
    assert (updates["c"].trigger, updates["c"].user_id) == ("refresh_request", "carl")
    assert updates["a"].message.startswith("Hentede") and updates["bad"].status == "failed"
    assert {updates[x].run_id for x in updates} == {ranged.update_id(result.run_id, x) for x in updates}
    # Dagster: per tenant, as if each had had its own run.
    assert instance.get_materialized_partitions(BUDGET_ACTUALS) == {"a", "c"}
    assert (check_status(instance, "a"), check_status(instance, "c")) == ("SUCCEEDED", "SUCCEEDED")
    # The sensors find each tenant of the run under its update's id.
    run = instance.get_run_by_id(result.run_id)
    assert ranged.run_tenants(run, "economic_update", lambda: tenants) == {
        x: ranged.update_id(result.run_id, x) for x in ("a", "bad", "c")}

    single = build_definitions().resolve_job_def("economic_sync").execute_in_process(
        instance=instance, partition_key="b", raise_on_error=False)  # one tenant: as it always was

    assert single.success and rows(engine)["b"].run_id == single.run_id
    assert check_status(instance, "b") == "SUCCEEDED"
    assert ranged.run_tenants(instance.get_run_by_id(single.run_id), "economic_update", list) == {"b": single.run_id}


def test_a_ranged_run_waits_for_a_running_update_of_its_tenant_and_never_loads_it_twice(tenants, engine, emulator, env):
    """No `dagster/partition` tag on a ranged run, so no run tag limit: the lease in the warehouse
    keeps a tenant to one load at a time, across processes; the ranged run's update of that tenant
    waits for the lease instead of failing, and runs once the other update has ended."""
    local_instance().add_dynamic_partitions("economic_tenants", tenants)
    # Past the first range's page, every entries page waits (ranges are fetched side by side): the
    # single update holds 'a' for six seconds at least, however fast its pages come otherwise.
    emulator.faults.page_delay, emulator.faults.page_delay_above = 6.0, 1
    single = subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", "a"], env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _lease(engine, "a"):
        assert single.poll() is None, single.communicate()
        time.sleep(0.05)

    instance = DagsterInstance.get()
    result = ranged_run(instance, "a", "b")

    out, err = single.communicate(timeout=240)
    assert single.returncode == 0, err[-3000:]
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("a: [waiting] Tenant 'a' (e-conomic): another update of this tenant is running" in m for m in logged)
    with engine.connect() as conn:
        ids = list(conn.execute(sa.select(t.transactions.c.entry_id).where(t.transactions.c.tenant_id == "a")).scalars())
        updates = conn.execute(sa.select(t.sync_runs).order_by(t.sync_runs.c.started_at)).mappings().all()
    assert len(ids) == len(set(ids)) == emulator.entry_count()
    by_tenant = {}
    for row in updates:
        by_tenant.setdefault(row["tenant_id"], []).append(row)
    cli, waited = by_tenant["a"]  # the CLI's first, then the ranged run's, after it and not failed
    assert (cli["status"], cli["transactions_fetched"]) == ("succeeded", emulator.entry_count())
    assert waited["run_id"] == ranged.update_id(result.run_id, "a")
    assert (waited["status"], waited["transactions_fetched"]) == ("succeeded", 0)
    assert cli["finished_at"] <= waited["started_at"]
    assert [r["status"] for r in by_tenant["b"]] == ["succeeded"]


def test_an_update_gives_up_waiting_for_a_busy_tenant_after_the_wait(tenants, engine, env, monkeypatch):
    """Bounded: a tenant held longer than the wait is refused, saying how long it waited."""
    from b123_pipelines import guard
    from b123_pipelines.resources import AccountingSystems
    from b123_pipelines.update import RunInfo, UpdateFailed, open_update

    monkeypatch.setattr(guard, "POLL_BUSY", 0.1)
    heard = []
    systems = AccountingSystems(secret_key=env["B123_SECRET_KEY"])
    with guard.held(engine, "a", "holder"):
        started = time.monotonic()
        with pytest.raises(UpdateFailed, match=r"still running after this one waited 0.5 seconds for it \(run holder\)"):
            with open_update(engine, systems.open, "a", RunInfo("waiter"), echo=heard.append, wait_for_lease=0.5):
                pass
        assert time.monotonic() - started >= 0.5
    assert [line for line in heard if "this one waits for it to end" in line] == heard[:1], heard  # said once
