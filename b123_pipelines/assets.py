"""One asset graph for every accounting system: accounts → dimensions → transactions → budget_actuals.

`build_system_graph(system)` makes one system's graph from its connector in the registry: one
multi-asset whose four assets are the phases of one update of one tenant (tenants are the system's
dynamic partitions). One step runs the phases the run selected with one setup (`update.py`): the
tenant's lease, credentials and `sync_runs` row are opened once and closed in one place. Checks are
attached where the system has what they need (its connector's capabilities).

A run of one tenant reports its phases as it always did (MaterializeResult). A run of many (a
backfill, or a sensor's batch: `ranged.py`) updates them in a thread pool and reports each phase as
an AssetMaterialization of the tenant's partition and each check as an AssetCheckEvaluation of it,
so Dagster shows every tenant's status as if it had had a run of its own.
"""

import threading
import time
from typing import Callable, Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    BackfillPolicy,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    define_asset_job,
    in_process_executor,
    multi_asset,
)

from b123_pipelines import checks, guard, ranged, status, sync
from b123_pipelines.connectors import connector_class
from b123_pipelines.figures import month_totals
from b123_pipelines.resources import AccountingSystems, Warehouse
from b123_pipelines.tenants import UnknownTenant
from b123_pipelines.update import RunInfo, Update, UpdateFailed, open_update

PHASES = ("accounts", "dimensions", "transactions", "budget_actuals")
TRIGGER_TAG, USER_TAG, FULL_TAG = "b123/trigger", "b123/user", "b123/full"
#: "stop" on a run whose tenant, if another update holds it, is refused at once (`b123 sync`: someone
#: at a terminal); any other run waits for that update to end (guard.WAIT_WHEN_BUSY).
IF_BUSY_TAG = "b123/if_busy"
OWNERS = ["team:data"]


def partitions_name(system: str) -> str:
    return f"{system}_tenants"


def job_name(system: str) -> str:
    return f"{system}_sync"


def pool_name(system: str) -> str:
    return f"{system}_api"


def op_name(system: str) -> str:
    return f"{system}_update"


def run_trigger(tags) -> str:
    """The trigger of a run's updates when its config names none (ranged.py's `starts`)."""
    return "backfill" if "dagster/backfill" in tags else tags.get(TRIGGER_TAG, "manual")


def run_info(context: AssetExecutionContext) -> RunInfo:
    tags = context.run.tags
    return RunInfo(context.run_id, run_trigger(tags), tags.get(USER_TAG), tags.get(FULL_TAG) == "true")


def lease_wait(context: AssetExecutionContext) -> float:
    """Seconds an update of this run waits for a tenant another update holds (guard.py)."""
    return 0.0 if context.run.tags.get(IF_BUSY_TAG) == "stop" else guard.WAIT_WHEN_BUSY.total_seconds()


# ---------------------------------------------------------------- the phases, as Dagster sees them
Phase = Callable[[Update, list], tuple]


def _chart(load, counter: str) -> Phase:
    def run(update: Update, _checks: list[str]):
        changes = load(update.engine, update.connector, update.run_id, update.log)
        status.add_counts(update.engine, update.run_id, **{counter: changes.total})
        return {name: MetadataValue.int(getattr(changes, name))
                for name in ("fetched", "added", "renamed", "moved", "deleted", "changed")}, []
    return run


def _transactions(update: Update, wanted: list[str]):
    load = sync.sync_transactions(update.engine, update.connector, update.run_id, update.log, update.run.full)
    status.add_counts(update.engine, update.run_id, transactions_fetched=load.fetched, transactions_new=load.new)
    results = [check(update, load) for name, check in TRANSACTION_CHECKS.items() if name in wanted]
    return {"fetched": MetadataValue.int(load.fetched), "new": MetadataValue.int(load.new),
            "replaced": MetadataValue.int(load.replaced), "pages": MetadataValue.int(load.pages),
            "retired": MetadataValue.int(load.retired), "months_to_recompute": MetadataValue.int(load.months),
            "api_calls": MetadataValue.int(update.connector.api_calls)}, results


def _budget_actuals(update: Update, wanted: list[str]):
    months = sync.rebuild_actuals(update.engine, update.tenant_id, update.log)
    results = [check(update, months) for name, check in ACTUALS_CHECKS.items() if name in wanted]
    with update.engine.connect() as conn:
        totals = month_totals(conn, update.tenant_id, months[-MONTHS_SHOWN:])
    return {"months_recomputed": MetadataValue.int(len(months)),
            "months": MetadataValue.text(", ".join(f"{m:%Y-%m}" for m in months) or "none"),
            "month_totals": MetadataValue.table(
                [TableRecord({"month": f"{m:%Y-%m}", "total": str(total), "entries": entries})
                 for m, total, entries in totals], schema=MONTH_TOTALS)}, results


MONTHS_SHOWN = 36  # the latest recomputed months in the table; a full sync recomputes them all
MONTH_TOTALS = TableSchema(columns=[
    TableColumn("month", "string", description="first day of the month, as YYYY-MM"),
    TableColumn("total", "string", description="sum of the month's actuals, exact (øre)"),
    TableColumn("entries", "int", description="posted entries in the month"),
])


TRANSACTION_CHECKS = {
    checks.DRAFT_EXCLUSION: lambda u, load: checks.draft_exclusion(u.engine, u.connector),
    checks.ROW_COUNTS: lambda u, load: checks.row_counts(u.engine, u.connector, u.run_id, load.fetched,
                                                         sync.load_cursor(u.engine, u.tenant_id)),
}
ACTUALS_CHECKS = {
    checks.ACTUALS_MATCH: lambda u, months: checks.actuals_match_transactions(u.engine, u.tenant_id, months),
    checks.RECONCILIATION: lambda u, months: checks.reconciliation(u.engine, u.connector),
}
PHASE_RUNS: dict[str, Phase] = {
    "accounts": _chart(sync.sync_accounts, "accounts_changed"),
    "dimensions": _chart(sync.sync_dimensions, "dimensions_changed"),
    "transactions": _transactions,
    "budget_actuals": _budget_actuals,
}


def run_phases(update: Update, keys: dict[str, AssetKey], selected: list[str],
               wanted_checks: set[str]) -> Iterator[MaterializeResult]:
    """Runs the selected phases in order; the last closes the update before it reports, so its
    metadata carries the status message. A failed blocking check reports, then stops the update."""
    for phase in selected:
        started = time.monotonic()
        metadata, results = PHASE_RUNS[phase](update, [c for c in checks.FOR_PHASE[phase] if c in wanted_checks])
        results = [r._replace(asset_key=keys[phase]) for r in results]  # one op, four assets: say whose
        metadata["duration_seconds"] = MetadataValue.float(round(time.monotonic() - started, 2))
        stopping = [r for r in results if not r.passed and r.check_name in checks.BLOCKING]
        failure = None
        if stopping:
            failure = update.stopped_by_checks("; ".join(f"{r.check_name}: {r.description}" for r in stopping))
            metadata["status_message"] = MetadataValue.text(failure.message)
        elif phase == selected[-1]:
            metadata["status_message"] = MetadataValue.text(update.succeed())
        yield MaterializeResult(asset_key=keys[phase], metadata=metadata, check_results=results)
        if failure is not None:
            raise failure


def update_many(context: AssetExecutionContext, config: ranged.UpdateConfig, warehouse: Warehouse,
                systems: AccountingSystems, keys: dict[str, AssetKey], selected: list[str],
                wanted: set[str], at_once: int) -> Iterator:
    """A run of many tenants: each its own update, `updates_at_once` at a time (the system's
    budget); each tenant's phases and checks reported on its own partition as it ends."""
    run = run_info(context)
    starts = config.starts
    tenants = [t for t in context.partition_keys if t in starts] if starts else list(context.partition_keys)
    infos = {t: RunInfo(ranged.update_id(run.run_id, t), starts[t].trigger if starts else run.trigger,
                        starts[t].user_id if starts else run.user_id, run.full) for t in tenants}
    engine = warehouse.engine()
    wait, stop = lease_wait(context), threading.Event()

    def update_one(tenant: str, results: list, echo) -> None:
        with open_update(engine, systems.open, tenant, infos[tenant], echo=lambda line: echo(f"{tenant}: {line}"),
                         wait_for_lease=wait, stop=stop) as opened:
            for result in run_phases(opened, keys, selected, wanted):
                results.append(result)

    outside = sorted(set(starts or ()) - set(context.partition_keys))
    if outside:
        # The range was cut from the partitions' order when the sensor asked; partitions added out of
        # that order meanwhile (the onboarding sensor in the same second) can leave a started tenant
        # outside it. Rare; said here so the data team sees whose start this run did not serve.
        context.log.warning(f"Not in this run's range of tenants, so not updated by it: {', '.join(outside)}.")
    context.log.info(f"Updating {len(tenants)} tenants, {min(at_once, len(tenants))} at a time.")
    failures = {}
    for outcome in ranged.update_all(tenants, update_one, at_once, context.log.info, stop=stop):
        for result in outcome.results:
            yield AssetMaterialization(asset_key=result.asset_key, partition=outcome.tenant_id,
                                       metadata=result.metadata)
            for check in result.check_results:
                yield AssetCheckEvaluation(
                    asset_key=check.asset_key, check_name=check.check_name, passed=check.passed,
                    metadata=check.metadata, severity=check.severity, description=check.description,
                    blocking=check.check_name in checks.BLOCKING, partition=outcome.tenant_id)
        if outcome.failure is not None:
            failures[outcome.tenant_id] = outcome.failure
    if failures:
        # The run fails, so Dagster marks exactly these tenants' partitions failed.
        raise Failure(description=ranged.failure_summary(failures, len(tenants)), allow_retries=False)


# ---------------------------------------------------------------- the graph
def build_system_graph(system: str, database_kind: str) -> tuple[list, object]:
    """The four assets of one accounting system, and the job that updates one tenant through them."""
    connector = connector_class(system)
    label = connector.label
    partitions = DynamicPartitionsDefinition(name=partitions_name(system))
    keys = {phase: AssetKey([system, phase]) for phase in PHASES}
    descriptions = {
        "accounts": f"Each tenant's chart of accounts (kontoplan) from {label}: warehouse tables `accounts` and "
                    "`account_changes` (added, renamed, moved, deleted).",
        "dimensions": f"Each tenant's dimension values from {label}: warehouse tables `dimension_values` and "
                      "`dimension_changes`.",
        "transactions": f"Each tenant's posted entries (posteringer) from {label}, fetched incrementally after "
                        "the stored cursor; never a draft journal line. Warehouse table `transactions`.",
        "budget_actuals": "Posted figures per account, dimension values and month, set against the budget "
                          "(realiserede tal). Recomputes only the months new or changed entries touched. "
                          "Table `budget_actuals`.",
    }
    specs = [
        AssetSpec(keys[phase], deps=[keys[PHASES[i - 1]]] if i else [], description=descriptions[phase],
                  group_name=system, owners=OWNERS, kinds={"python", database_kind, system})
        for i, phase in enumerate(PHASES)
    ]

    @multi_asset(name=op_name(system), specs=specs, check_specs=checks.specs(connector, keys, partitions),
                 can_subset=True, partitions_def=partitions, pool=pool_name(system),
                 # A backfill is a few runs of many tenants each, not a run per tenant (ranged.py).
                 backfill_policy=BackfillPolicy.multi_run(ranged.TENANTS_PER_RUN),
                 description=f"One update per {label} tenant of the run: the selected phases, with one setup each.")
    def update(context: AssetExecutionContext, config: ranged.UpdateConfig, warehouse: Warehouse,
               systems: AccountingSystems):
        selected = [p for p in PHASES if keys[p] in context.selected_asset_keys]
        wanted = {key.name for key in context.selected_asset_check_keys}
        tenants = context.partition_keys
        if len(tenants) > 1:
            yield from update_many(context, config, warehouse, systems, keys, selected, wanted,
                                   connector.budget.updates_at_once)
            return
        try:
            with open_update(warehouse.engine(), systems.open, tenants[0], run_info(context),
                             echo=context.log.info, wait_for_lease=lease_wait(context)) as opened:
                yield from run_phases(opened, keys, selected, wanted)
        except (UpdateFailed, UnknownTenant) as exc:
            raise Failure(description=str(exc), allow_retries=False) from None

    job = define_asset_job(
        job_name(system), selection=AssetSelection.groups(system), partitions_def=partitions,
        description=f"Update one {label} tenant's accounting figures (partition = tenant).",
        # One step per update: a process of its own would add seconds and no speed.
        executor_def=in_process_executor,
    )
    return [update], job
