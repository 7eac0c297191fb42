"""Run retention: finished Dagster runs older than N days (default 90) are deleted, daily.

Open-source Dagster purges sensor and schedule ticks (`retention:` in dagster.yaml) but keeps every
run and its event log forever; with a run per tenant per day that is millions of runs a year in
Dagster's database. The warehouse's `sync_runs` is the long-term history of every update (what
the app shows and what the data team queries), so Dagster keeps only recent runs: the
`run_retention_daily` schedule runs `run_retention`, which deletes finished runs (succeeded, failed,
canceled) whose last change is older than the retention, with their events. A run that holds a
tenant's newest materialization of an asset is kept whatever its age, so a tenant not updated for
months still shows its last materialization in the UI. That is read from the materializations
themselves, not from the run's tags or status: a run of many tenants (ranged.py) has no
`dagster/partition` tag, and one that failed for one tenant may hold another's newest update.
Queued and running runs are never touched.
"""

import datetime as dt
import os
from dataclasses import dataclass, field

from dagster import (
    AssetRecordsFilter,
    Config,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunsFilter,
    ScheduleDefinition,
    job,
    op,
)

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
PAGE = 500


def retention_days() -> int:
    """B123_RUN_RETENTION_DAYS, default 90."""
    raw = os.environ.get("B123_RUN_RETENTION_DAYS") or "90"
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"B123_RUN_RETENTION_DAYS must be a whole number of days, not '{raw}'.") from None
    if days < 1:
        raise ValueError(f"B123_RUN_RETENTION_DAYS must be 1 or more, not {days}.")
    return days


@dataclass
class Purge:
    deleted: int = 0
    kept: list[str] = field(default_factory=list)  # run ids kept for a tenant's newest materialization


def purge_old_runs(instance: DagsterInstance, days: int, now: dt.datetime | None = None) -> Purge:
    """Deletes finished runs not changed for `days` days, oldest first, keeping each run that holds
    a partition's (tenant's) newest materialization of an asset. Pages through the runs with a
    cursor: the run the cursor names is deleted only once the next page has been read past it."""
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=days)
    old = RunsFilter(statuses=FINISHED, updated_before=cutoff)
    newest: dict[tuple, str | None] = {}
    purge = Purge()
    cursor, pending = None, None

    def delete(run_id: str) -> None:
        instance.delete_run(run_id)
        purge.deleted += 1

    while True:
        page = instance.get_run_records(filters=old, limit=PAGE, cursor=cursor, ascending=True)
        if pending is not None:
            delete(pending)
            pending = None
        if not page:
            return purge
        cursor = page[-1].dagster_run.run_id
        for record in page:
            run = record.dagster_run
            if _holds_a_newest_materialization(instance, run.run_id, newest):
                purge.kept.append(run.run_id)
            elif run.run_id == cursor:
                pending = run.run_id
            else:
                delete(run.run_id)
        if len(page) < PAGE:
            if pending is not None:
                delete(pending)
            return purge


def _holds_a_newest_materialization(instance: DagsterInstance, run_id: str, cache: dict[tuple, str | None]) -> bool:
    """Whether the run recorded the newest materialization of one of its asset partitions (a
    tenant's phase); `cache` keeps the run of each (asset, partition)'s newest across runs."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        key, partition = event.asset_key, event.partition
        if (key, partition) not in cache:
            latest = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
            cache[(key, partition)] = latest[0].run_id if latest else None
        if cache[(key, partition)] == run_id:
            return True
    return False


class RetentionConfig(Config):
    days: int = 0  # 0: B123_RUN_RETENTION_DAYS (default 90)


@op(description="Deletes finished runs older than the retention (default 90 days) with their events; "
    "keeps every run that holds a tenant's newest materialization. sync_runs in the warehouse keeps the whole history.")
def purge_old_dagster_runs(context: OpExecutionContext, config: RetentionConfig) -> None:
    days = config.days or retention_days()
    purge = purge_old_runs(context.instance, days)
    context.log.info(f"Deleted {purge.deleted:,} finished runs older than {days} days; kept "
                     f"{len(purge.kept):,} of them for a tenant's newest materialization.")


@job(description="Run retention: Dagster keeps finished runs for B123_RUN_RETENTION_DAYS (default 90) days; "
     "the warehouse's sync_runs is the long-term history.")
def run_retention():
    purge_old_dagster_runs()


run_retention_schedule = ScheduleDefinition(
    name="run_retention_daily", job=run_retention, cron_schedule="30 3 * * *",
    execution_timezone="Europe/Copenhagen", default_status=DefaultScheduleStatus.RUNNING,
)
