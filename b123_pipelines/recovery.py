"""Updates whose process died (killed, machine lost, database gone mid-run) are found and closed.

A dead update would otherwise hold its Dagster run STARTED and its pool slot forever (four dead
runs fill a pool and every later update waits), keep its `sync_runs` row `running` (so `b123
status` and the app say it is running), and keep the refresh requests attached to it unserved.
Found here: a stale lease (its process is gone on this host, or it stopped renewing it), a run the
CLI started on this host whose process is gone, and a `running` row whose Dagster run has ended.
Each is closed once: its requests go back to the sensors (state `new`), its row is closed with
STOPPED, its Dagster run is marked failed and its pool slots are freed. The CLI runs this before it
starts an update; the `dead_updates` sensor runs it on the daemon.

An update's id is its Dagster run's id, or for a tenant in a run of many one derived from the run's
(ranged.update_id): `runs_of_updates` finds the run of each, among the runs not finished and, for an
update that ended, the runs that were under way when it started.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.dagster_run import DagsterRun
from sqlalchemy.engine import Engine

from b123_pipelines import guard, ranged, status, tables as t
from b123_pipelines.assets import USER_TAG, job_name, op_name, partitions_name, run_trigger
from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.db import utc
from b123_pipelines.errors import system_label
from b123_pipelines.update import STOPPED

HOST_TAG, PID_TAG = "b123/host", "b123/pid"
LIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
NOT_FINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, *LIVE]
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


# ---------------------------------------------------------------- a sync run: its system, tenants, updates
def system_of(run) -> str | None:
    """The system a run updates: its job's (`<system>_sync`), or for a run of Dagster's own asset
    job (a backfill from the UI) its assets' group."""
    for system in CONNECTORS:
        if run.job_name == job_name(system):
            return system
    systems = {key.path[0] for key in run.asset_selection or () if key.path[0] in CONNECTORS}
    return systems.pop() if len(systems) == 1 else None


def tenants_of(instance: DagsterInstance, run, partitions: dict | None = None) -> dict[str, str]:
    """Tenant → update id (its sync_runs row) for every tenant a sync run updates (ranged.py).
    `partitions` caches each system's partitions across calls."""
    system = system_of(run)
    if system is None:
        return {}
    cache = {} if partitions is None else partitions

    def keys() -> list[str]:
        if system not in cache:
            cache[system] = instance.get_dynamic_partitions(partitions_name(system))
        return cache[system]

    return ranged.run_tenants(run, op_name(system), keys)


def who_started(run, tenant_id: str) -> tuple[str, str | None]:
    """The trigger and user of a tenant's update in a run: from a sensor's batch config, else the run's."""
    start = ranged.starts_of(run, op_name(system_of(run) or ""))
    if tenant_id in start:
        return start[tenant_id].get("trigger") or run_trigger(run.tags), start[tenant_id].get("user_id")
    return run_trigger(run.tags), run.tags.get(USER_TAG)


def runs_of_updates(instance: DagsterInstance, started: dict[str, dt.datetime | None]) -> dict[str, DagsterRun]:
    """Update id → its Dagster run, for the updates (id → when it started) this instance ran: a run's
    own id, an update in a run not finished, or one in a run that was under way when it started."""
    if not started:
        return {}
    found = {run.run_id: run for run in instance.get_runs(filters=RunsFilter(run_ids=list(started)))}
    partitions: dict = {}

    def look(runs) -> None:
        for run in runs:
            for update in tenants_of(instance, run, partitions).values():
                if update in started and update not in found:
                    found[update] = run

    if set(started) - set(found):
        look(instance.get_runs(filters=RunsFilter(statuses=NOT_FINISHED)))
    # Only a derived id (a tenant's update in a run of many: uuid5) can be in another run; a run id
    # (uuid4) matching no run belongs to a deleted run or another instance, and searching every
    # finished run since it started, on every tick, would never end.
    ended = [utc(at) for update, at in started.items()
             if update not in found and at is not None and _derived(update)]
    if ended:
        # Created before the earliest such update started (no later), finished after it started.
        look(instance.get_runs(filters=RunsFilter(statuses=FINISHED, created_before=max(ended),
                                                  updated_after=min(ended))))
    return {update: found[update] for update in started if update in found}


def _derived(update_id: str) -> bool:
    try:
        return uuid.UUID(update_id).version == 5
    except ValueError:
        return False


def process_tags() -> dict[str, str]:
    """Tags on a run this process executes itself, so a later process can tell if it died."""
    return {HOST_TAG: guard.HOST, PID_TAG: str(os.getpid())}


def recover_dead_updates(instance: DagsterInstance, engine: Engine) -> list[str]:
    """Closes every dead update this instance and warehouse can see; returns their update ids."""
    dead: dict[str, str] = {}  # update id -> tenant_id
    started: dict[str, dt.datetime | None] = {}
    for lease in guard.stale_leases(engine):
        dead[lease.run_id] = lease.tenant_id
        started[lease.run_id] = lease.acquired_at
    for run in instance.get_runs(filters=RunsFilter(statuses=LIVE)):
        tags = run.tags
        if tags.get(HOST_TAG) == guard.HOST and PID_TAG in tags and not guard.alive(int(tags[PID_TAG])):
            dead[run.run_id] = tags.get("dagster/partition", "")
            started[run.run_id] = None
    orphaned, runs = _orphaned_rows(instance, engine)
    for update, tenant_id in orphaned.items():
        dead.setdefault(update, tenant_id)
    runs.update(runs_of_updates(instance, {u: at for u, at in started.items() if u not in runs}))
    for update, tenant_id in dead.items():
        _close(instance, engine, update, tenant_id, runs.get(update))
    return list(dead)


def _orphaned_rows(instance: DagsterInstance, engine: Engine) -> tuple[dict[str, str], dict[str, DagsterRun]]:
    """`running` rows whose run this instance knows and has ended (update id → tenant), and the run
    of each row it found."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.sync_runs.c.run_id, t.sync_runs.c.tenant_id, t.sync_runs.c.started_at)
                            .where(t.sync_runs.c.status == "running")).all()
    if not rows:
        return {}, {}
    runs = runs_of_updates(instance, {r.run_id: r.started_at for r in rows})
    return {r.run_id: r.tenant_id for r in rows if r.run_id in runs and runs[r.run_id].is_finished}, runs


def _close(instance: DagsterInstance, engine: Engine, update: str, tenant_id: str, run: DagsterRun | None) -> None:
    requests = t.sync_requests.c
    with engine.begin() as conn:
        conn.execute(t.sync_requests.update().where(
            requests.run_id == update, requests.state.in_(("queued", "running")),
        ).values(state="new", run_id=None))
        system = conn.execute(sa.select(t.tenants.c.system).where(t.tenants.c.tenant_id == tenant_id)).scalar()
    if tenant_id:
        status.close_failed_run(engine, update, tenant_id, system or "", "manual", None,
                                f"Tenant '{tenant_id}' ({system_label(system or '')}): {STOPPED}")
        guard.drop(engine, tenant_id, update)
    if run is None:
        return
    run = instance.get_run_by_id(run.run_id)  # as it is now
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, f"The process running this update is gone. {STOPPED}")
    if run is not None:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
