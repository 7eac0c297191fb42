"""Many tenants in one run: a run over a range of tenant partitions updates them in a thread pool.

A Dagster run costs seconds of bookkeeping whatever it does, so a backfill (the assets'
`BackfillPolicy.multi_run`) and a sensor tick that starts many updates give one run a range of
tenants. Each tenant is still one update of its own (`update.py`: its lease, `sync_runs` row,
credentials and connector); at most `at_once` of them run at once, in threads, since an update
mostly waits on its API and the warehouse. A tenant that fails does not stop the others.

Each tenant's update has an id of its own (`sync_runs.run_id`, the lease, the live log): the run's
id when the run has one tenant, as before, else one derived from the run's id and the tenant's
(`update_id`), so the sensors can name the update of a tenant in a run without asking anyone.

Which tenants of a run a sensor started, and why, travels in the run's config (`starts`); a run
without it (a backfill from the UI) updates every tenant of its range.
"""

from __future__ import annotations

import queue
import threading
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional

from dagster import Config

from b123_pipelines.tenants import UnknownTenant
from b123_pipelines.update import UpdateFailed

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: Tenants in one run at most (the backfill policy's and the sensors' batches): enough that a
#: run's own bookkeeping is spread thin, few enough that the updates of a wave spread over workers.
TENANTS_PER_RUN = 100


class TenantStart(Config):
    trigger: str
    user_id: Optional[str] = None


class UpdateConfig(Config):
    """Set by the sensors on a run of many tenants: the tenants to update and why. Empty (a backfill
    from the UI): every tenant of the run's range, as trigger 'backfill'."""

    starts: dict[str, TenantStart] = {}


def update_id(run_id: str, tenant_id: str) -> str:
    """The id of one tenant's update in a run of many (36 characters, like a run id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dagster-run:{run_id}/{tenant_id}"))


def run_tenants(run, op_name: str, partitions: Callable[[], list[str]]) -> dict[str, str]:
    """Tenant → update id for every tenant a sync run updates, from its tags and config alone.

    `partitions` gives the system's partitions in order; it is called only for a ranged run
    without `starts` (a backfill)."""
    tags = run.tags
    if PARTITION_TAG in tags:
        return {tags[PARTITION_TAG]: run.run_id}
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start is None or end is None:
        return {}
    if start == end:
        return {start: run.run_id}
    tenants = list(starts_of(run, op_name))
    if not tenants:
        keys = partitions()
        if start not in keys or end not in keys:
            return {}
        tenants = keys[keys.index(start): keys.index(end) + 1]
    return {tenant: update_id(run.run_id, tenant) for tenant in tenants}


def starts_of(run, op_name: str) -> dict[str, dict]:
    """Tenant → {"trigger", "user_id"} as a sensor put them in a run of many's config; {} for any
    other run (a run of one says it in its tags, a backfill is trigger 'backfill' for all)."""
    config = ((run.run_config or {}).get("ops", {}).get(op_name) or {}).get("config") or {}
    return dict(config.get("starts") or {})


def ranges(tenants: list[str], order: list[str]) -> list[list[str]]:
    """The tenants in partition order (`order`; tenants not in it go last, sorted), in batches of
    at most TENANTS_PER_RUN: each batch is one run over the range from its first to its last."""
    position = {tenant: i for i, tenant in enumerate(order)}
    ordered = sorted(tenants, key=lambda tenant: (position.get(tenant, len(order)), tenant))
    return [ordered[i:i + TENANTS_PER_RUN] for i in range(0, len(ordered), TENANTS_PER_RUN)]


@dataclass
class TenantOutcome:
    tenant_id: str
    results: list = field(default_factory=list)  # what the update yielded, in order
    failure: str | None = None


UpdateOne = Callable[[str, list, Callable[[str], None]], None]


def update_all(tenants: list[str], update_one: UpdateOne, at_once: int,
               log: Callable[[str], None], stop: threading.Event | None = None) -> Iterator[TenantOutcome]:
    """Runs `update_one(tenant, results, echo)` for every tenant, `at_once` at a time, and yields
    each tenant's outcome as it ends. `update_one` appends what it yields to `results` and raises
    on failure; the exception's text is the tenant's failure. Lines the updates echo reach `log` on
    this thread only (Dagster's log and events are written from the step's own thread). `stop` is
    set when this ends early (the run cancelled), so an update waiting for its tenant stops waiting."""
    lines: queue.SimpleQueue = queue.SimpleQueue()

    def drain() -> None:
        while True:
            try:
                log(lines.get_nowait())
            except queue.Empty:
                return

    def one(tenant: str) -> TenantOutcome:
        outcome = TenantOutcome(tenant)
        try:
            update_one(tenant, outcome.results, lines.put)
        except (UpdateFailed, UnknownTenant) as exc:  # explained, and its row closed already
            outcome.failure = str(exc)
        except Exception as exc:  # unforeseen: update.py closed the row; the trace is for the data team
            outcome.failure = f"Tenant '{tenant}': the update stopped on an unexpected error ({type(exc).__name__})."
            lines.put(f"Tenant '{tenant}': {''.join(traceback.format_exception(exc))}")
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, min(at_once, len(tenants))), thread_name_prefix="tenant")
    try:
        pending = {pool.submit(one, tenant) for tenant in tenants}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                yield future.result()
        drain()
    finally:
        # Stopped (the run cancelled): no new tenant starts, none waits on; those under way end as
        # update.py ends them.
        if stop is not None:
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def failure_summary(failures: Mapping[str, str], total: int) -> str:
    listed = "\n".join(f"- {message}" for message in failures.values())
    return (f"{len(failures)} of {total} tenants failed ({', '.join(failures)}); the others were "
            f"updated.\n{listed}")
