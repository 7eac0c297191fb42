"""The instance's upkeep: each system's pool limit (pools.py) and run retention (retention.py)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from dagster import AssetKey, AssetMaterialization, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEvent, StepMaterializationData
from dagster._core.storage.dagster_run import DagsterRun

from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.pools import apply_pool_limits, pool_limits
from b123_pipelines.retention import purge_old_runs, run_retention, run_retention_schedule

ROOT = Path(__file__).resolve().parents[1]
TRANSACTIONS = AssetKey(["economic", "transactions"])


def _local_instance(home: Path) -> DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "b123_pipelines" / "instance" / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def test_pool_limits_come_from_each_connectors_budget_and_are_applied_once(tmp_path):
    assert pool_limits() == {f"{s}_api": c.budget.updates_at_once for s, c in CONNECTORS.items()}
    instance = _local_instance(tmp_path / "dagster")
    try:
        # A pool that got the instance's default limit (a run claimed it first) becomes ours too.
        instance.event_log_storage.initialize_concurrency_limit_to_default("economic_api")
        assert apply_pool_limits(instance) == pool_limits()
        assert apply_pool_limits(instance) == {}
        instance.event_log_storage.set_concurrency_slots("economic_api", 9)  # by hand
        assert apply_pool_limits(instance, only_unset=True) == {}  # what the CLI does: it holds
        assert apply_pool_limits(instance) == {"economic_api": pool_limits()["economic_api"]}  # a deploy
        assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()} == pool_limits()
    finally:
        instance.dispose()


def test_python_m_pools_prints_what_it_set(tmp_path):
    home = tmp_path / "dagster"
    _local_instance(home).dispose()
    env = {"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-m", "b123_pipelines.pools"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"economic_api: {pool_limits()['economic_api']} update(s) at once (set now)" in first.stdout
    again = subprocess.run([sys.executable, "-m", "b123_pipelines.pools"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert "economic_api" in again.stdout and "(set now)" not in again.stdout


def _run(instance, status: DagsterRunStatus, tenant: str | None = None, updated: tuple[str, ...] = (),
         tags: dict | None = None) -> str:
    """A finished run of one tenant (`tenant`) or of a range (`tags`) that materialized the
    transactions of the tenants `updated`."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="economic_sync", run_id=run_id, status=status,
                                tags=tags or ({"dagster/partition": tenant} if tenant else {})))
    for partition in updated:
        instance.report_dagster_event(DagsterEvent(
            DagsterEventType.ASSET_MATERIALIZATION.value, job_name="economic_sync",
            event_specific_data=StepMaterializationData(AssetMaterialization(TRANSACTIONS, partition=partition))),
            run_id=run_id)
    return run_id


def test_finished_runs_past_the_retention_are_deleted_but_each_tenants_newest_success_is_kept(tmp_path):
    instance = _local_instance(tmp_path / "dagster")
    try:
        old_success_a = _run(instance, DagsterRunStatus.SUCCESS, "a", updated=("a",))
        newest_success_a = _run(instance, DagsterRunStatus.SUCCESS, "a", updated=("a",))
        failed_a = _run(instance, DagsterRunStatus.FAILURE, "a")
        only_failure_b = _run(instance, DagsterRunStatus.FAILURE, "b")
        canceled = _run(instance, DagsterRunStatus.CANCELED)
        retention_run = _run(instance, DagsterRunStatus.SUCCESS)
        running = _run(instance, DagsterRunStatus.STARTED, "c")
        not_started = _run(instance, DagsterRunStatus.NOT_STARTED, "d")

        # Not old yet: nothing goes.
        assert purge_old_runs(instance, days=90).deleted == 0
        # 91 days on: every finished run goes but tenant a's newest success; the unfinished stay.
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
        purge = purge_old_runs(instance, days=90, now=later)
        left = {run.run_id for run in instance.get_runs()}
        assert left == {newest_success_a, running, not_started}
        assert purge.deleted == 5 and purge.kept == [newest_success_a]
        assert not {old_success_a, failed_a, only_failure_b, canceled, retention_run} & left
        assert instance.get_records_for_run(old_success_a).records == []
    finally:
        instance.dispose()


def test_retention_pages_through_more_runs_than_a_page(tmp_path, monkeypatch):
    import b123_pipelines.retention as retention

    monkeypatch.setattr(retention, "PAGE", 3)
    instance = _local_instance(tmp_path / "dagster")
    try:
        runs = [_run(instance, DagsterRunStatus.FAILURE, f"t{i % 2}") for i in range(8)]
        runs.append(_run(instance, DagsterRunStatus.SUCCESS, "t0", updated=("t0",)))
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
        purge = purge_old_runs(instance, days=90, now=later)
        assert purge.deleted == 8 and {r.run_id for r in instance.get_runs()} == {runs[-1]}
    finally:
        instance.dispose()


def test_retention_keeps_runs_of_many_tenants_that_hold_a_tenants_newest_update(tmp_path):
    """A run of many tenants has no `dagster/partition` tag, and one that failed for one tenant
    holds the others' updates: kept while it holds some tenant's newest materialization."""
    instance = _local_instance(tmp_path / "dagster")
    try:
        def ranged(status, first, last, updated):
            return _run(instance, status, updated=updated, tags={
                "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})

        older = ranged(DagsterRunStatus.SUCCESS, "a", "b", ("a", "b"))
        failed_for_bad = ranged(DagsterRunStatus.FAILURE, "a", "c", ("a", "c"))  # 'bad' failed; a, c updated
        newest_b = _run(instance, DagsterRunStatus.SUCCESS, "b", updated=("b",))
        nothing = ranged(DagsterRunStatus.FAILURE, "a", "c", ())  # died before it updated anyone

        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
        purge = purge_old_runs(instance, days=90, now=later)

        assert {run.run_id for run in instance.get_runs()} == {failed_for_bad, newest_b}
        assert purge.deleted == 2 and sorted(purge.kept) == sorted([failed_for_bad, newest_b])
        assert {older, nothing}.isdisjoint(purge.kept)
        assert instance.get_materialized_partitions(TRANSACTIONS) == {"a", "b", "c"}
    finally:
        instance.dispose()


def test_the_retention_job_runs_daily_in_process(tmp_path, monkeypatch):
    assert run_retention_schedule.cron_schedule == "30 3 * * *"
    assert run_retention_schedule.job_name == "run_retention"
    instance = _local_instance(tmp_path / "dagster")
    try:
        _run(instance, DagsterRunStatus.FAILURE, "a")
        monkeypatch.setenv("B123_RUN_RETENTION_DAYS", "1")
        result = run_retention.execute_in_process(instance=instance)
        assert result.success  # nothing a day old yet; the job's own run stays too
        assert len(instance.get_runs()) == 2
    finally:
        instance.dispose()
