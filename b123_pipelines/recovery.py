"""Updates whose process died (killed, machine lost, database gone mid-run) are found and closed.

A dead update would otherwise hold its Dagster run STARTED and its pool slot forever (four dead
runs fill a pool and every later update waits), keep its `sync_runs` row `running` (so `b123
status` and the app say it is running), and keep the refresh requests attached to it unserved.
Found here: a stale lease (its process is gone on this host, or it stopped renewing it), a run the
CLI started on this host whose process is gone, and a `running` row whose Dagster run has ended.
Each is closed once: its requests go back to the sensors (state `new`), its row is closed with
STOPPED, its Dagster run is marked failed and its pool slots are freed. The CLI runs this before it
starts an update; the `dead_updates` sensor runs it on the daemon.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy.engine import Engine

from b123_pipelines import guard, status, tables as t
from b123_pipelines.errors import system_label
from b123_pipelines.update import STOPPED

HOST_TAG, PID_TAG = "b123/host", "b123/pid"
LIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def process_tags() -> dict[str, str]:
    """Tags on a run this process executes itself, so a later process can tell if it died."""
    return {HOST_TAG: guard.HOST, PID_TAG: str(os.getpid())}


def recover_dead_updates(instance: DagsterInstance, engine: Engine) -> list[str]:
    """Closes every dead update this instance and warehouse can see; returns their run ids."""
    dead: dict[str, str] = {}  # run_id -> tenant_id
    for lease in guard.stale_leases(engine):
        dead[lease.run_id] = lease.tenant_id
    for run in instance.get_runs(filters=RunsFilter(statuses=LIVE)):
        tags = run.tags
        if tags.get(HOST_TAG) == guard.HOST and PID_TAG in tags and not guard.alive(int(tags[PID_TAG])):
            dead[run.run_id] = tags.get("dagster/partition", "")
    for run_id, tenant_id in _orphaned_rows(instance, engine).items():
        dead.setdefault(run_id, tenant_id)
    for run_id, tenant_id in dead.items():
        _close(instance, engine, run_id, tenant_id)
    return list(dead)


def _orphaned_rows(instance: DagsterInstance, engine: Engine) -> dict[str, str]:
    """`running` rows whose run this instance knows and has ended."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.sync_runs.c.run_id, t.sync_runs.c.tenant_id)
                            .where(t.sync_runs.c.status == "running")).all()
    if not rows:
        return {}
    ended = instance.get_runs(filters=RunsFilter(run_ids=[r.run_id for r in rows]))
    ended = {run.run_id for run in ended if run.is_finished}
    return {r.run_id: r.tenant_id for r in rows if r.run_id in ended}


def _close(instance: DagsterInstance, engine: Engine, run_id: str, tenant_id: str) -> None:
    requests = t.sync_requests.c
    with engine.begin() as conn:
        conn.execute(t.sync_requests.update().where(
            requests.run_id == run_id, requests.state.in_(("queued", "running")),
        ).values(state="new", run_id=None))
        system = conn.execute(sa.select(t.tenants.c.system).where(t.tenants.c.tenant_id == tenant_id)).scalar()
    if tenant_id:
        status.close_failed_run(engine, run_id, tenant_id, system or "", "manual", None,
                                f"Tenant '{tenant_id}' ({system_label(system or '')}): {STOPPED}")
        guard.drop(engine, tenant_id, run_id)
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, f"The process running this update is gone. {STOPPED}")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
