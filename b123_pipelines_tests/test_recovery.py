"""An update that dies (SIGKILL, Ctrl-C) must not poison the instance; one lease per update."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from dagster import DagsterRunStatus

from b123_pipelines import tables as t
from b123_pipelines.resources import AccountingSystems
from b123_pipelines.runner import local_instance, run_sync
from b123_pipelines.update import STOPPED, RunInfo, UpdateFailed, open_update
from b123_pipelines_tests.helpers import entry_ids, nonzero, wait_for_pages, warehouse_sums

POOL = "economic_api"


def _start_sync() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", "acme"], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _row(engine, run_id: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.run_id == run_id)).mappings().one()


def test_a_killed_update_frees_its_slot_closes_its_row_and_hands_back_its_requests(env, engine, emulator, tenant):
    instance = local_instance()
    instance.event_log_storage.set_concurrency_slots(POOL, 1)  # one dead run would block every update
    with engine.begin() as conn:
        conn.execute(t.sync_requests.insert().values(tenant_id="acme", user_id="anna", requested_at=sa.func.now(),
                                                     state="queued"))
    emulator.faults.page_delay = 0.3
    sync = _start_sync()
    dead = wait_for_pages(engine, sync)["run_id"]
    sync.send_signal(signal.SIGKILL)
    sync.communicate()
    assert instance.get_run_by_id(dead).status == DagsterRunStatus.STARTED
    assert _row(engine, dead)["status"] == "running"
    emulator.faults.page_delay = 0
    lines: list[str] = []

    outcome = run_sync("acme", echo=lines.append)

    assert outcome.ok, outcome.message
    assert any(dead in line and "stopped unexpectedly" in line for line in lines)
    assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
    assert dead not in instance.event_log_storage.get_concurrency_info(POOL).active_run_ids
    closed = _row(engine, dead)
    assert closed["status"] == "failed" and STOPPED in closed["message"]
    with engine.connect() as conn:
        request = conn.execute(sa.select(t.sync_requests)).mappings().one()
    assert (request["state"], request["run_id"]) == ("new", None)  # the sensors serve it anew
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())


def test_ctrl_c_ends_cleanly_and_closes_the_update(env, engine, emulator, tenant):
    # The first range's page comes at once, the others late (ranges are fetched side by side): the
    # Ctrl-C lands while the update is fetching entries, not after it has ended.
    emulator.faults.page_delay, emulator.faults.page_delay_above = 5, 1
    sync = _start_sync()
    run_id = wait_for_pages(engine, sync)["run_id"]

    sync.send_signal(signal.SIGINT)
    out, err = sync.communicate(timeout=60)

    assert sync.returncode == 1
    assert "Traceback" not in err and "CheckError" not in err, err[-3000:]
    assert STOPPED in err
    row = _row(engine, run_id)
    assert row["status"] == "failed" and STOPPED in row["message"]
    assert local_instance().get_run_by_id(run_id).status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.sync_leases)).first() is None
    emulator.faults.page_delay = 0
    assert run_sync("acme", echo=None).ok
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]


def test_an_update_waiting_for_a_pool_slot_says_so(env, engine, emulator, tenant):
    instance = local_instance()
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    instance.event_log_storage.claim_concurrency_slot(POOL, "another-run", "economic_update")
    lines: list[str] = []
    outcome = []
    sync = threading.Thread(target=lambda: outcome.append(run_sync("acme", echo=lines.append)), daemon=True)
    sync.start()
    deadline = time.monotonic() + 60
    while not any("Waiting for a free slot" in line for line in lines):
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    assert any("another-run" in line and POOL in line for line in lines)

    instance.event_log_storage.free_concurrency_slots_for_run("another-run")
    sync.join(timeout=120)

    assert outcome and outcome[0].ok, outcome


def test_the_lease_is_held_for_the_whole_update(env, engine, emulator, tenant):
    """Before, each phase took and gave back the lease: a second loader could take the tenant between
    two phases, and the update that started first lost."""
    from b123_pipelines import sync as phases

    systems = AccountingSystems(secret_key=env["B123_SECRET_KEY"])
    with open_update(engine, systems.open, "acme", RunInfo("first")) as first:
        phases.sync_accounts(engine, first.connector, first.run_id, first.log)
        with pytest.raises(UpdateFailed, match="another update of this tenant is running"):
            with open_update(engine, systems.open, "acme", RunInfo("second")):
                pass
        phases.sync_dimensions(engine, first.connector, first.run_id, first.log)
    assert _row(engine, "first")["status"] == "succeeded"
    assert _row(engine, "second")["status"] == "failed"
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.sync_leases)).first() is None


def test_one_update_opens_the_credentials_and_takes_the_lease_once(env, engine, emulator, tenant, monkeypatch):
    """Before, each of the four phases read the tenant, decrypted its credentials and took the lease."""
    from b123_pipelines import guard
    from b123_pipelines.vault import Vault

    calls = {"decrypt": 0, "acquire": 0}

    def counted(name, original):
        def call(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return call

    monkeypatch.setattr(Vault, "decrypt", counted("decrypt", Vault.decrypt))
    monkeypatch.setattr(guard, "acquire", counted("acquire", guard.acquire))

    assert run_sync("acme", echo=None).ok

    assert calls == {"decrypt": 1, "acquire": 1}
    with engine.connect() as conn:
        phases = set(conn.execute(sa.select(t.sync_log.c.phase)).scalars())
    assert {"accounts", "dimensions", "transactions", "budget_actuals"} <= phases


def test_dead_updates_in_runs_of_many_are_found_by_their_derived_ids(env, engine, vault, emulator, tenant):
    """A tenant in a run of many has an update id derived from the run's (ranged.update_id): a
    `running` row of a run that ended, and a stale lease in a run whose process is gone, are matched
    to their Dagster run, closed, and that run marked failed with its pool slots freed."""
    import datetime as dt

    from dagster._core.storage.dagster_run import DagsterRun

    from b123_pipelines import guard, ranged, status
    from b123_pipelines.recovery import recover_dead_updates
    from b123_pipelines.tenants import add_tenant
    from b123_pipelines_tests.conftest import economic_connection

    add_tenant(engine, vault, "bolt", "economic", "Bolt ApS", economic_connection(emulator))
    instance = local_instance()
    instance.add_dynamic_partitions("economic_tenants", ["acme", "bolt"])

    def ranged_run(tenant: str) -> DagsterRun:
        run = DagsterRun(job_name="economic_sync", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
                         tags={ranged.RANGE_START_TAG: "acme", ranged.RANGE_END_TAG: "bolt"},
                         run_config={"ops": {"economic_update": {"config": {"starts": {
                             tenant: {"trigger": "first_login", "user_id": "anna"}, "other": {"trigger": "x"}}}}}})
        instance.add_run(run)
        status.open_run(engine, ranged.update_id(run.run_id, tenant), tenant, "economic", "first_login", "anna", False)
        return run

    ended = ranged_run("acme")  # its row stays `running`, the run ends (e.g. its process was lost)
    instance.report_run_failed(ended, "lost")
    dead = ranged_run("bolt")  # its update's lease goes stale, the run still says STARTED
    dead_update = ranged.update_id(dead.run_id, "bolt")
    guard.acquire(engine, "bolt", dead_update)
    with engine.begin() as conn:
        conn.execute(t.sync_leases.update().values(renewed_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
    instance.event_log_storage.set_concurrency_slots(POOL, 2)
    instance.event_log_storage.claim_concurrency_slot(POOL, dead.run_id, "economic_update")

    closed = recover_dead_updates(instance, engine)

    assert sorted(closed) == sorted([ranged.update_id(ended.run_id, "acme"), dead_update])
    for update in closed:
        row = _row(engine, update)
        assert row["status"] == "failed" and STOPPED in row["message"], row
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert dead.run_id not in instance.event_log_storage.get_concurrency_info(POOL).active_run_ids
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.sync_leases)).first() is None
    assert recover_dead_updates(instance, engine) == []  # each is closed once
