"""Sensors and the schedule: how updates start and end without the data team.

The budget123 app only writes rows (tenants, logins, refresh requests) and reads rows (sync_runs,
sync_log, sync_requests); these turn the rows into Dagster runs. The rules are in triggers.py.
"""

from __future__ import annotations


import sqlalchemy as sa
from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    sensor,
)

from b123_pipelines import doctor, ranged, status, tables as t, triggers
from b123_pipelines.assets import TRIGGER_TAG, USER_TAG, job_name, op_name, partitions_name
from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.db import now
from b123_pipelines.errors import system_label
from b123_pipelines.recovery import recover_dead_updates, system_of, tenants_of, who_started
from b123_pipelines.resources import AccountingSystems, Warehouse
from b123_pipelines.tenants import list_tenants, mark_awaiting_credentials, record_credential_check

REQUEST_TAG = "b123/request"
PARTITION_TAG = ranged.PARTITION_TAG
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED]
BATCH = 1000


def in_flight(instance: DagsterInstance) -> dict[str, tuple[str, str]]:
    """Tenant → (update id, queued | running) for every sync run not finished, one run of one
    tenant or of many, in one query (and one per system for a backfill's runs)."""
    found, partitions = {}, {}
    for run in instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT)):
        state = "queued" if run.status == DagsterRunStatus.QUEUED else "running"
        for tenant, update in tenants_of(instance, run, partitions).items():
            found[tenant] = (update, state)
    return found


def _partition_requests(instance: DagsterInstance, wanted: dict[str, set[str]], exact: bool) -> list:
    """Adds (and, when `exact`, removes) tenants so each system's partitions are `wanted`, in batches."""
    requests = []
    for system, tenants in wanted.items():
        name = partitions_name(system)
        have = set(instance.get_dynamic_partitions(name))
        add, remove = sorted(tenants - have), sorted(have - tenants) if exact else []
        requests += [AddDynamicPartitionsRequest(name, add[i:i + BATCH]) for i in range(0, len(add), BATCH)]
        requests += [DeleteDynamicPartitionsRequest(name, remove[i:i + BATCH]) for i in range(0, len(remove), BATCH)]
    return requests


def _run_requests(instance, starts: list[triggers.Start], cursor: str | None = None) -> SensorResult:
    """One run per system for what the tick found (per TENANTS_PER_RUN of it): a tenant alone is
    the run of one partition it always was; many share a run over their range (ranged.py), whose
    config names them with each one's trigger and user."""
    by_system: dict[str, dict[str, triggers.Start]] = {}
    for start in starts:
        by_system.setdefault(start.system, {})[start.tenant_id] = start
    requests, runs = _partition_requests(instance, {s: set(found) for s, found in by_system.items()}, exact=False), []
    for system, found in by_system.items():
        if len(found) == 1:
            s = next(iter(found.values()))
            runs.append(RunRequest(
                job_name=job_name(system), partition_key=s.tenant_id,
                tags={TRIGGER_TAG: s.trigger, USER_TAG: s.user_id,
                      **({REQUEST_TAG: str(s.request_id)} if s.request_id else {})}))
            continue
        # Partitions added this tick go after the existing ones, in the order they are added.
        order = instance.get_dynamic_partitions(partitions_name(system))
        for batch in ranged.ranges(list(found), order):
            runs.append(RunRequest(
                job_name=job_name(system),
                tags={ranged.RANGE_START_TAG: batch[0], ranged.RANGE_END_TAG: batch[-1],
                      TRIGGER_TAG: found[batch[0]].trigger},
                run_config={"ops": {op_name(system): {"config": {"starts": {
                    tenant: {"trigger": found[tenant].trigger, "user_id": found[tenant].user_id}
                    for tenant in batch}}}}}))
    # A tenant the onboarding sensor has not reached yet becomes a partition first.
    return SensorResult(dynamic_partitions_requests=requests, run_requests=runs, cursor=cursor)


def build_sensors(jobs: list) -> list:
    @sensor(name="tenant_onboarding", minimum_interval_seconds=15, default_status=DefaultSensorStatus.RUNNING,
            description="Keeps each system's tenant partitions equal to the app's tenants table.")
    def tenant_onboarding(context: SensorEvaluationContext, warehouse: Warehouse):
        wanted: dict[str, set[str]] = {system: set() for system in CONNECTORS}
        with warehouse.engine().connect() as conn:
            for tenant_id, system in conn.execute(sa.select(t.tenants.c.tenant_id, t.tenants.c.system)):
                if system in wanted:
                    wanted[system].add(tenant_id)
        requests = _partition_requests(context.instance, wanted, exact=True)
        return SensorResult(dynamic_partitions_requests=requests) if requests else SkipReason("tenants unchanged")

    @sensor(name="first_login_updates", minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING,
            jobs=jobs, description="Starts an update at a user's first login of the day (see triggers.py).")
    def first_login_updates(context: SensorEvaluationContext, warehouse: Warehouse):
        with warehouse.engine().connect() as conn:
            decision = triggers.first_login_starts(
                conn, int(context.cursor or 0), set(in_flight(context.instance)), now())
        if decision.skipped:
            context.log.info("logins not starting an update: " + ", ".join(f"{k}: {v}" for k, v in decision.skipped.items()))
        return _run_requests(context.instance, decision.starts, cursor=str(decision.cursor))

    @sensor(name="refresh_requests", minimum_interval_seconds=3, default_status=DefaultSensorStatus.RUNNING,
            jobs=jobs, description="Serves the app's 'Update accounting figures' requests and keeps their state.")
    def refresh_requests(context: SensorEvaluationContext, warehouse: Warehouse):
        engine = warehouse.engine()
        with engine.begin() as conn:
            decision = triggers.refresh_starts(conn, in_flight(context.instance))
            triggers.apply_request_updates(conn, decision.updates)
        if not decision.updates:
            return SkipReason("no new requests")
        return _run_requests(context.instance, decision.starts)

    @run_failure_sensor(name="sync_failures", monitored_jobs=jobs, default_status=DefaultSensorStatus.RUNNING,
                        minimum_interval_seconds=5,
                        description="Closes the update of a run that failed, also one that died before its code ran.")
    def sync_failures(context: RunFailureSensorContext, warehouse: Warehouse):
        run = context.dagster_run
        system = system_of(run) or ""
        reason = context.failure_event.message or "the run failed"
        # Each tenant of the run whose update did not close its own row (e.g. the run died first),
        # as started by whom started it (a sensor's batch names each tenant's trigger and user).
        for tenant_id, update in tenants_of(context.instance, run).items():
            message = (f"Tenant '{tenant_id}' ({system_label(system)}): the update stopped before it could "
                       f"finish ({reason}). Try again; if it keeps failing, the data team must look at run "
                       f"{run.run_id} in Dagster.")
            status.close_failed_run(warehouse.engine(), update, tenant_id, system, *who_started(run, tenant_id),
                                    message)

    @sensor(name="dead_updates", minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
            description="Closes updates whose process died (killed, machine lost): their run, pool slots, "
                        "sync_runs row and refresh requests (see recovery.py).")
    def dead_updates(context: SensorEvaluationContext, warehouse: Warehouse):
        closed = recover_dead_updates(context.instance, warehouse.engine())
        return SkipReason(f"closed dead updates {', '.join(closed)}" if closed else "no dead updates")

    return [tenant_onboarding, first_login_updates, refresh_requests, sync_failures, dead_updates]


@op(description="Runs the connection doctor (doctor.py) for every enabled tenant: its credentials still "
    "work, and for an on-premise tenant the manual's whole checklist (agent, port, clock, licence, file "
    "password, database, login message, user, customisations). The first failing finding is recorded in "
    "credential_checks, in the tenant's locale, for the app to show before an update fails.")
def check_credentials(context, warehouse: Warehouse, systems: AccountingSystems) -> None:
    # A daily job rather than an asset check: health must be known while no update runs (the point
    # is to warn before a user's update fails), and Dagster's check results are not per tenant
    # partition. (e-conomic grants never expire, so there is nothing to renew here yet.)
    engine = warehouse.engine()
    for tenant in list_tenants(engine):
        if not tenant.enabled or tenant.system not in CONNECTORS:
            continue
        report = doctor.examine(engine, tenant, systems.open)
        refused = any(f.credentials is False for f in report.findings)
        if refused:
            mark_awaiting_credentials(engine, tenant.tenant_id)
        failure = report.first_failure
        record_credential_check(engine, tenant.tenant_id, failure is None,
                                failure.text(tenant.locale) if failure else None)
        for finding in report.findings:
            if finding.status in ("fail", "warn"):
                context.log.warning(f"Tenant '{tenant.tenant_id}': {finding.text('en')}")
        works = any(f.credentials is True for f in report.findings)
        if tenant.awaiting_credentials and works and not refused:
            # Access was restored at the source: resume the tenant.
            mark_awaiting_credentials(engine, tenant.tenant_id, waiting=False)


@job(description="Runs the connection doctor for every tenant so the app can warn before an update fails.")
def credential_health():
    check_credentials()


credential_health_schedule = ScheduleDefinition(
    name="credential_health_daily", job=credential_health, cron_schedule="0 5 * * *",
    execution_timezone="Europe/Copenhagen", default_status=DefaultScheduleStatus.RUNNING,
)


