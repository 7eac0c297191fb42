"""Runs one tenant's update through Dagster on the configured instance, following its live log.

This is what `b123 sync` and `b123 demo` use; the sensors start the same job through the daemon.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
import uuid

from dagster import DagsterInstance

from b123_pipelines import settings
from b123_pipelines import tables as t
from b123_pipelines.assets import FULL_TAG, IF_BUSY_TAG, TRIGGER_TAG, USER_TAG, job_name, partitions_name, pool_name
from b123_pipelines.db import connection_problem, display_url, engine_for
from b123_pipelines.errors import system_label
from b123_pipelines.pools import apply_pool_limits
from b123_pipelines.recovery import process_tags, recover_dead_updates
from b123_pipelines.tenants import get_tenant
from b123_pipelines.update import STOPPED

# Dagster's console logger would print every failure with its stack trace (~90 lines; ~830 when the
# database goes away): the CLI prints our message instead, and the traces stay in Dagster's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class Outcome:
    run_id: str
    status: str  # succeeded | failed
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def local_instance() -> DagsterInstance:
    """The instance in DAGSTER_HOME (default B123_HOME/dagster), as `make ui` shows it."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(Path(__file__).parent / "instance" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.get()
    apply_pool_limits(instance, only_unset=True)  # each system's pool at its API budget's limit (pools.py)
    return instance


def ensure_partition(instance: DagsterInstance, system: str, tenant_id: str) -> None:
    partitions = partitions_name(system)
    if instance.has_dynamic_partition(partitions, tenant_id):
        return
    try:
        instance.add_dynamic_partitions(partitions, [tenant_id])
    except Exception:
        # Another process (a second sync, the onboarding sensor) may have added it just now.
        if not instance.has_dynamic_partition(partitions, tenant_id):
            raise


def run_sync(tenant_id: str, full: bool = False, trigger: str = "manual", user_id: str | None = None,
             echo: Callable[[str], None] | None = print, instance: DagsterInstance | None = None) -> Outcome:
    from b123_pipelines.definitions import build_definitions

    engine = engine_for(settings.database_url())
    tenant = get_tenant(engine, tenant_id)
    instance = instance or local_instance()
    say = echo or (lambda _: None)
    for dead in recover_dead_updates(instance, engine):
        say(f"  Closed update {dead}, which had stopped unexpectedly; this one resumes where it stopped.")
    ensure_partition(instance, tenant.system, tenant_id)
    _say_if_waiting(instance, pool_name(tenant.system), say)
    run_id = str(uuid.uuid4())
    tags = {TRIGGER_TAG: trigger, **({USER_TAG: user_id} if user_id else {}), **({FULL_TAG: "true"} if full else {}),
            IF_BUSY_TAG: "stop", **process_tags()}  # someone waits at the terminal: a busy tenant is refused at once
    follower = LogFollower(engine, run_id, echo) if echo else None
    if follower:
        follower.start()
    try:
        # Built per run so the resources follow the environment of this call (tests switch it).
        result = build_definitions().resolve_job_def(job_name(tenant.system)).execute_in_process(
            partition_key=tenant_id, instance=instance, run_id=run_id, tags=tags,
            run_config=QUIET, raise_on_error=False,
        )
    except KeyboardInterrupt:
        recover_dead_updates(instance, engine)  # closes what the interrupt left open
        row = _row(engine, run_id)
        return Outcome(run_id, "failed", row.message if row and row.message else f"Tenant '{tenant_id}': {STOPPED}")
    finally:
        if follower:
            follower.stop()
    try:
        row = _row(engine, run_id)
    except sa.exc.SQLAlchemyError as exc:
        if connection_problem(exc) is None:
            raise
        # The database went away during the run: that is the news, whatever the run recorded.
        return Outcome(run_id, "failed", (
            f"Tenant '{tenant_id}' ({system_label(tenant.system)}): the update stopped because the warehouse "
            f"database at {display_url(settings.database_url())} cannot be reached ({connection_problem(exc)}). "
            "Nothing already loaded was lost; once the database is back, the next update resumes where this "
            "one stopped."))
    if row is not None and row.status == "running" and not result.success:
        # The run ended (an interrupt Dagster caught in the step) without closing its row: close it
        # as recovery would, now, rather than leave it running until the next update.
        recover_dead_updates(instance, engine)
        row = _row(engine, run_id)
    if row is not None and row.status != "running":
        return Outcome(run_id, row.status, row.message)
    # The run died before a phase could close its row: say so rather than nothing.
    message = _first_failure(result) or "the update did not finish"
    return Outcome(run_id, "succeeded" if result.success else "failed", message)


def _row(engine, run_id: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_runs.c.status, t.sync_runs.c.message)
                            .where(t.sync_runs.c.run_id == run_id)).first()


def _first_failure(result) -> str | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.description
    return None


def _say_if_waiting(instance: DagsterInstance, pool: str, say: Callable[[str], None]) -> None:
    """A full pool makes an update wait for a slot: say so rather than seem to hang."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    if info.slot_count and info.active_slot_count >= info.slot_count:
        say(f"  Waiting for a free slot: all {info.slot_count} slots of pool '{pool}' are in use by runs "
            f"{', '.join(sorted(info.active_run_ids))}.")


class LogFollower(threading.Thread):
    """Prints the run's sync_log lines as they are committed, with a progress bar over pages."""

    def __init__(self, engine, run_id: str, echo: Callable[[str], None]):
        super().__init__(daemon=True)
        self.engine, self.run_id, self.echo = engine, run_id, echo
        self._stop_event = threading.Event()
        self._last = 0
        self._bar = None
        # Taken now: while the run executes, Dagster captures sys.stderr for its compute logs.
        self._terminal = sys.stderr if sys.stderr.isatty() else None

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            self._drain()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self._drain()
        if self._bar is not None:
            self._bar.close()

    def _drain(self) -> None:
        log = t.sync_log.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(t.sync_log).where(log.run_id == self.run_id, log.line_id > self._last)
                                    .order_by(log.line_id)).all()
        except sa.exc.SQLAlchemyError:
            return  # the database is away: the run's outcome says so; no trace from this thread
        for row in rows:
            self._last = row.line_id
            if row.page and self._terminal is not None:
                self._progress(row)
            else:
                self.echo(f"  [{row.phase}] {row.message}")

    def _progress(self, row) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=row.pages_total, unit="page", desc="transactions", leave=False,
                             file=self._terminal)
        self._bar.total = max(self._bar.total or 0, row.pages_total or 0)
        self._bar.update(row.page - self._bar.n)
        self._bar.set_postfix(entries=row.rows_so_far)
