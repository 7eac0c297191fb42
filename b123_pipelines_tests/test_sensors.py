"""Sensor rules, evaluated with build_sensor_context against real tables on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRunStatus,
    DeleteDynamicPartitionsRequest,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.test_utils import create_run_for_test

from b123_pipelines import ranged, sensors
from b123_pipelines import tables as t
from b123_pipelines.definitions import build_definitions
from b123_pipelines.resources import Warehouse
from b123_pipelines.runner import local_instance, run_sync
from b123_pipelines.tenants import add_role, add_tenant, add_user, record_login, request_refresh
from b123_pipelines_tests.conftest import economic_connection

UTC = dt.timezone.utc
# 01:00 in Copenhagen on 28 November (UTC+1): the local day began at 23:00 UTC the day before.
NOW = dt.datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def world(env, engine, vault, emulator):
    """Tenants and users covering every rule; acme is the one that may update."""
    connection = economic_connection(emulator)
    add_tenant(engine, vault, "acme", "economic", "Acme ApS", connection)
    add_tenant(engine, vault, "london", "economic", "London Ltd", connection, timezone="Europe/London", locale="en")
    add_tenant(engine, vault, "locked", "economic", "Locked ApS", connection)
    add_tenant(engine, vault, "paused", "economic", "Paused ApS", connection)
    with engine.begin() as conn:
        conn.execute(t.tenants.insert().values(tenant_id="basement", name="Kælder A/S", system="onpremise",
                                               timezone="Europe/Copenhagen", locale="da", enabled=True,
                                               awaiting_credentials=False, created_at=NOW))
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == "locked").values(awaiting_credentials=True))
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == "paused").values(enabled=False))
    add_role(engine, "controller", True)
    add_role(engine, "viewer", False)
    for user, tenant, role, auto in [("anna", "acme", "controller", True), ("bo", "acme", "controller", True),
                                     ("carl", "acme", "viewer", True), ("dora", "acme", "controller", False),
                                     ("eve", "basement", "controller", True), ("fay", "locked", "controller", True),
                                     ("gus", "paused", "controller", True), ("liz", "london", "controller", True)]:
        add_user(engine, user, tenant, role, auto)
    return engine


@pytest.fixture
def defs():
    return build_definitions()


@pytest.fixture
def instance(env):
    with DagsterInstance.ephemeral() as instance:
        yield instance


def tick(defs, name, instance, env, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor,
                                   resources={"warehouse": Warehouse(database_url=env["B123_DATABASE_URL"])})
    return defs.resolve_sensor_def(name)(context)


def first_login_tick(defs, instance, env, monkeypatch, now=NOW, cursor=None):
    monkeypatch.setattr(sensors, "now", lambda: now)
    return tick(defs, "first_login_updates", instance, env, cursor)


def started(result) -> list[tuple[str, str, str]]:
    return [(r.partition_key, r.tags["b123/trigger"], r.tags["b123/user"]) for r in result.run_requests]


def test_first_login_of_the_day_starts_one_update(world, defs, instance, env, monkeypatch):
    login = record_login(world, "anna", at("2026-11-27T23:10:00"))

    result = first_login_tick(defs, instance, env, monkeypatch)

    assert started(result) == [("acme", "first_login", "anna")]
    assert result.run_requests[0].job_name == "economic_sync"
    assert result.cursor == str(login)
    # The tenant becomes a partition in the same tick if the onboarding sensor has not got to it.
    assert any(isinstance(r, AddDynamicPartitionsRequest) and "acme" in r.partition_keys
               for r in result.dynamic_partitions_requests)


def test_two_logins_of_one_tenant_in_one_tick_make_one_update(world, defs, instance, env, monkeypatch):
    record_login(world, "anna", at("2026-11-27T23:10:00"))
    record_login(world, "bo", at("2026-11-27T23:11:00"))

    assert started(first_login_tick(defs, instance, env, monkeypatch)) == [("acme", "first_login", "anna")]


def test_a_second_login_the_same_day_is_not_a_first_login(world, defs, instance, env, monkeypatch):
    record_login(world, "anna", at("2026-11-27T23:10:00"))
    first = first_login_tick(defs, instance, env, monkeypatch)
    record_login(world, "anna", at("2026-11-27T23:40:00"))

    second = first_login_tick(defs, instance, env, monkeypatch, cursor=first.cursor)

    assert started(second) == [] and int(second.cursor) > int(first.cursor)


@pytest.mark.parametrize("user", ["carl", "dora", "eve", "fay", "gus"],
                         ids=["role denied", "setting off", "on-premise", "waiting for credentials", "disabled"])
def test_logins_that_must_not_start_an_update(world, defs, instance, env, monkeypatch, user):
    record_login(world, user, at("2026-11-27T23:10:00"))

    assert started(first_login_tick(defs, instance, env, monkeypatch)) == []


def test_time_zone_edges(world, defs, instance, env, monkeypatch):
    # 22:30 UTC is 23:30 in Copenhagen on the 27th: yesterday, so no update today from it.
    record_login(world, "anna", at("2026-11-27T22:30:00"))
    assert started(first_login_tick(defs, instance, env, monkeypatch)) == []
    # 23:30 UTC on the 27th is 00:30 on the 28th in Copenhagen: a new day, so anna's first login
    # of it; in London it is still the 27th, so liz's login at the same instant is yesterday's.
    record_login(world, "anna", at("2026-11-27T23:30:00"))
    record_login(world, "liz", at("2026-11-27T23:30:00"))
    assert started(first_login_tick(defs, instance, env, monkeypatch)) == [("acme", "first_login", "anna")]


def _finished_run(engine, tenant, status, finished):
    with engine.begin() as conn:
        conn.execute(t.sync_runs.insert().values(
            run_id=f"r-{tenant}-{finished:%H%M%S}", tenant_id=tenant, system="economic", trigger="manual",
            started_at=finished - dt.timedelta(minutes=1), finished_at=finished, status=status))


def test_already_updated_since_local_midnight(world, defs, instance, env, monkeypatch):
    # 23:15 UTC on the 27th is 00:15 on the 28th in Copenhagen: today.
    _finished_run(world, "acme", "succeeded", at("2026-11-27T23:15:00"))
    record_login(world, "anna", at("2026-11-27T23:30:00"))

    assert started(first_login_tick(defs, instance, env, monkeypatch)) == []


def test_updated_before_local_midnight_does_not_count(world, defs, instance, env, monkeypatch):
    _finished_run(world, "acme", "succeeded", at("2026-11-27T22:45:00"))
    record_login(world, "anna", at("2026-11-27T23:30:00"))

    assert started(first_login_tick(defs, instance, env, monkeypatch)) == [("acme", "first_login", "anna")]


@pytest.mark.parametrize("status", [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED])
def test_update_already_queued_or_running(world, defs, instance, env, monkeypatch, status):
    create_run_for_test(instance, job_name="economic_sync", status=status, tags={"dagster/partition": "acme"})
    record_login(world, "anna", at("2026-11-27T23:30:00"))

    assert started(first_login_tick(defs, instance, env, monkeypatch)) == []


@pytest.mark.parametrize("failures, minutes_ago, starts", [(2, 5, True), (3, 30, False), (3, 90, True), (5, 200, False)])
def test_back_off_after_consecutive_failures(world, defs, instance, env, monkeypatch, failures, minutes_ago, starts):
    with world.begin() as conn:
        conn.execute(t.sync_health.insert().values(
            tenant_id="acme", consecutive_failures=failures, last_failure_at=NOW - dt.timedelta(minutes=minutes_ago)))
    record_login(world, "anna", at("2026-11-27T23:30:00"))

    assert bool(started(first_login_tick(defs, instance, env, monkeypatch))) is starts


def _requests(engine):
    with engine.connect() as conn:
        return {r.request_id: r for r in conn.execute(sa.select(t.sync_requests))}


def test_refresh_request_starts_an_update_and_its_state_follows_it(world, defs, instance, env):
    request = request_refresh(world, "acme", "anna")

    result = tick(defs, "refresh_requests", instance, env)

    assert started(result) == [("acme", "refresh_request", "anna")]
    assert result.run_requests[0].tags["b123/request"] == str(request)
    assert _requests(world)[request].state == "queued"
    outcome = run_sync("acme", trigger="refresh_request", user_id="anna", echo=None)  # the launched run
    assert outcome.ok
    served = _requests(world)[request]
    assert (served.state, served.run_id) == ("done", outcome.run_id) and "Hentede" in served.reason


def test_two_refresh_requests_at_once_make_one_update(world, defs, instance, env):
    first, second = request_refresh(world, "acme", "anna"), request_refresh(world, "acme", "bo")

    result = tick(defs, "refresh_requests", instance, env)

    assert len(result.run_requests) == 1
    outcome = run_sync("acme", trigger="refresh_request", echo=None)
    states = _requests(world)
    assert {states[first].run_id, states[second].run_id} == {outcome.run_id}
    assert states[first].state == states[second].state == "done"


def test_a_refresh_request_joins_an_update_in_flight(world, defs, instance, env):
    run = create_run_for_test(instance, job_name="economic_sync", status=DagsterRunStatus.STARTED,
                              tags={"dagster/partition": "acme"})
    request = request_refresh(world, "acme", "anna")

    result = tick(defs, "refresh_requests", instance, env)

    assert result.run_requests == []
    assert (_requests(world)[request].state, _requests(world)[request].run_id) == ("running", run.run_id)


def test_one_tick_of_many_tenants_is_one_run_and_each_keeps_its_trigger_user_and_requests(world, defs, instance, env, monkeypatch):
    """A batch shares one run over its tenants' range; the run's config says who started each."""
    record_login(world, "anna", at("2026-11-27T23:10:00"))
    record_login(world, "liz", at("2026-11-28T00:00:00"))

    [request] = first_login_tick(defs, instance, env, monkeypatch).run_requests

    assert request.partition_key is None
    assert (request.tags[ranged.RANGE_START_TAG], request.tags[ranged.RANGE_END_TAG]) == ("acme", "london")
    assert request.run_config["ops"]["economic_update"]["config"]["starts"] == {
        "acme": {"trigger": "first_login", "user_id": "anna"}, "london": {"trigger": "first_login", "user_id": "liz"}}
    instance.add_dynamic_partitions("economic_tenants", ["acme", "london"])
    queued = create_run_for_test(instance, job_name="economic_sync", status=DagsterRunStatus.STARTED,
                                 tags=request.tags, run_config=request.run_config)
    assert sensors.in_flight(instance) == {tenant: (ranged.update_id(queued.run_id, tenant), "running")
                                           for tenant in ("acme", "london")}
    # A refresh request meanwhile joins that tenant's update in the batch.
    refresh = request_refresh(world, "acme", "bo")
    assert tick(defs, "refresh_requests", instance, env).run_requests == []
    assert _requests(world)[refresh].run_id == ranged.update_id(queued.run_id, "acme")

    instance.delete_run(queued.run_id)  # the daemon launches it: the same run, executed
    result = defs.resolve_job_def("economic_sync").execute_in_process(
        instance=instance, run_id=queued.run_id, tags=request.tags, run_config=request.run_config)

    assert result.success
    with world.connect() as conn:
        updates = {r.tenant_id: r for r in conn.execute(sa.select(t.sync_runs))}
    assert {(k, r.trigger, r.user_id, r.status) for k, r in updates.items()} == {
        ("acme", "first_login", "anna", "succeeded"), ("london", "first_login", "liz", "succeeded")}
    served = _requests(world)[refresh]
    assert served.state == "done" and served.reason == updates["acme"].message


@pytest.mark.parametrize("tenant, user, words", [
    ("acme", "carl", "Din rolle giver ikke ret til at hente regnskabstal"),
    ("acme", "stranger", "hører ikke til denne kunde"),
    ("locked", "fay", "Indhent automatisk ny token"),
    ("paused", "gus", "deaktiveret"),
])
def test_refused_requests_say_why(world, defs, instance, env, tenant, user, words):
    request = request_refresh(world, tenant, user)

    result = tick(defs, "refresh_requests", instance, env)

    assert result.run_requests == []
    refused = _requests(world)[request]
    assert refused.state == "refused" and words in refused.reason


def test_manual_requests_run_while_automatic_triggers_back_off(world, defs, instance, env):
    with world.begin() as conn:
        conn.execute(t.sync_health.insert().values(tenant_id="acme", consecutive_failures=9,
                                                   last_failure_at=dt.datetime.now(UTC)))
    request_refresh(world, "acme", "anna")

    assert started(tick(defs, "refresh_requests", instance, env)) == [("acme", "refresh_request", "anna")]


def test_onboarding_adds_and_removes_partitions_in_batches(world, defs, instance, env):
    instance.add_dynamic_partitions("economic_tenants", ["gone", "paused"])
    with world.begin() as conn:
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == "paused").values(system="uniconta"))
        conn.execute(t.tenants.insert(), [dict(tenant_id=f"bulk-{i:04d}", name="Bulk", system="economic",
                                               timezone="Europe/Copenhagen", locale="da", enabled=True,
                                               awaiting_credentials=False, created_at=NOW) for i in range(2100)])

    result = tick(defs, "tenant_onboarding", instance, env)

    adds = [r for r in result.dynamic_partitions_requests if isinstance(r, AddDynamicPartitionsRequest)]
    deletes = [r for r in result.dynamic_partitions_requests if isinstance(r, DeleteDynamicPartitionsRequest)]
    # economic: acme, london, locked + 2100; uniconta: paused, which moved there
    assert [(r.partitions_def_name, len(r.partition_keys)) for r in adds] == [
        ("economic_tenants", 1000), ("economic_tenants", 1000), ("economic_tenants", 103), ("uniconta_tenants", 1)]
    assert {k for r in adds for k in r.partition_keys} >= {"acme", "london", "locked", "bulk-0000"}
    assert "basement" not in {k for r in adds for k in r.partition_keys}  # no connector for it here
    assert [sorted(r.partition_keys) for r in deletes] == [["gone", "paused"]]


def _dying_run_seen_by_sync_failures(defs, instance, env, **run):
    """Runs economic_sync (`run`: its partition, tags, config) against a warehouse it cannot reach, so
    it fails before any phase can open an update, then lets the sync_failures sensor see it."""
    unreachable = Warehouse(database_url="postgresql+psycopg2://postgres@127.0.0.1:1/none")
    result = defs.resolve_job_def("economic_sync").execute_in_process(
        instance=instance, raise_on_error=False, resources={"warehouse": unreachable}, **run)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = build_run_status_sensor_context(
        sensor_name="sync_failures", dagster_event=failure, dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"warehouse": Warehouse(database_url=env["B123_DATABASE_URL"])},
    ).for_run_failure()
    defs.resolve_sensor_def("sync_failures")(context)
    return result


def test_a_run_that_dies_before_its_code_runs_is_closed_with_a_message(world, defs, instance, env):
    request = request_refresh(world, "acme", "anna")
    tick(defs, "refresh_requests", instance, env)
    instance.add_dynamic_partitions("economic_tenants", ["acme"])
    result = _dying_run_seen_by_sync_failures(defs, instance, env, partition_key="acme",
                                              tags={"b123/trigger": "refresh_request", "b123/user": "anna"})

    with world.connect() as conn:
        row = conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.run_id == result.run_id)).mappings().one()
    assert row["status"] == "failed" and row["trigger"] == "refresh_request"
    assert "Tenant 'acme' (e-conomic)" in row["message"] and result.run_id in row["message"]
    assert _requests(world)[request].state == "failed"


def test_a_batch_run_that_dies_closes_each_tenants_update_as_started_by_its_own_user(world, defs, instance, env):
    """A sensor's run of many tenants that fails before its code runs: each tenant's row is closed
    under its own update id with the trigger and user that started it (the run's config), not the run's."""
    requests = {tenant: request_refresh(world, tenant, user) for tenant, user in (("acme", "anna"), ("london", "liz"))}
    (batch,) = tick(defs, "refresh_requests", instance, env).run_requests
    instance.add_dynamic_partitions("economic_tenants", ["acme", "london"])
    result = _dying_run_seen_by_sync_failures(defs, instance, env, tags=batch.tags, run_config=batch.run_config)

    with world.connect() as conn:
        rows = {r.tenant_id: r for r in conn.execute(sa.select(t.sync_runs))}
    assert {tenant: (r.run_id, r.status, r.trigger, r.user_id) for tenant, r in rows.items()} == {
        "acme": (ranged.update_id(result.run_id, "acme"), "failed", "refresh_request", "anna"),
        "london": (ranged.update_id(result.run_id, "london"), "failed", "refresh_request", "liz")}
    assert {_requests(world)[r].state for r in requests.values()} == {"failed"}


def test_two_syncs_of_one_tenant_at_once_never_load_twice(world, emulator):
    """Even runs launched by hand, past the run tag limit, are stopped by the database guard."""
    emulator.faults.page_delay = 0.3
    local_instance()  # an instance in use already, as anywhere but on a machine's very first sync
    command = [sys.executable, "-m", "b123_pipelines.cli", "sync", "acme"]
    runs = [subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=240) for run in runs]

    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], outputs
    refused = next(err for (out, err), run in zip(outputs, runs) if run.returncode == 1)
    assert "another update of this tenant is running" in refused, refused[-3000:]
    with world.connect() as conn:
        ids = list(conn.execute(sa.select(t.transactions.c.entry_id).where(t.transactions.c.tenant_id == "acme")).scalars())
    assert len(ids) == len(set(ids)) == emulator.entry_count()


def test_credential_health_warns_before_an_update_fails(world, defs, instance, emulator):
    emulator.faults.revoked = True

    assert defs.resolve_job_def("credential_health").execute_in_process(instance=instance).success

    with world.connect() as conn:
        checks = {r.tenant_id: r for r in conn.execute(sa.select(t.credential_checks))}
        waiting = set(conn.execute(sa.select(t.tenants.c.tenant_id).where(t.tenants.c.awaiting_credentials)).scalars())
    assert not checks["acme"].ok and "Fetch new token automatically" in checks["acme"].warning
    assert "paused" not in checks and "basement" not in checks
    assert waiting == {"acme", "london", "locked"}
    emulator.faults.revoked = False
    defs.resolve_job_def("credential_health").execute_in_process(instance=instance)
    with world.connect() as conn:
        assert conn.execute(sa.select(t.credential_checks.c.ok).where(t.credential_checks.c.tenant_id == "acme")).scalar()
        assert not conn.execute(sa.select(t.tenants.c.awaiting_credentials).where(t.tenants.c.tenant_id == "acme")).scalar()
