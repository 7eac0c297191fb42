"""One asset graph for every accounting system: accounts → dimensions → transactions → budget_actuals.

`build_system_graph(system)` makes the graph for one system from its connector in the registry;
tenants are the dynamic partitions of that system. Each asset is a phase of one update ("sync") of
one tenant; together they keep that update's sync_runs row and live log.
"""


from contextlib import contextmanager
import time
from dataclasses import dataclass, field

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    in_process_executor,
)
from sqlalchemy.engine import Engine

from b123_pipelines import checks, guard, status, sync
from b123_pipelines.connectors.base import Connector
from b123_pipelines.errors import SyncError, redact, system_label
from b123_pipelines.resources import AccountingSystems, Warehouse
from b123_pipelines.tenants import Tenant, UnknownTenant, get_tenant, mark_awaiting_credentials
from b123_pipelines.vault import VaultError

PHASES = ("accounts", "dimensions", "transactions", "budget_actuals")
TRIGGER_TAG, USER_TAG, FULL_TAG = "b123/trigger", "b123/user", "b123/full"
OWNERS = ["team:data"]


def partitions_name(system: str) -> str:
    return f"{system}_tenants"


def job_name(system: str) -> str:
    return f"{system}_sync"


def pool_name(system: str) -> str:
    return f"{system}_api"


@dataclass
class Step:
    context: AssetExecutionContext
    engine: Engine
    tenant: Tenant
    connector: Connector
    log: status.LiveLog
    phase: str
    full: bool
    started: float = field(default_factory=time.monotonic)

    @property
    def run_id(self) -> str:
        return self.context.run_id

    def finish(self, results=()) -> dict:
        """Closes the update when this is the last phase the run selected, or when a blocking check
        failed; returns the status message as metadata. A failed blocking check then fails the step
        (Dagster's doing), so the phases after it do not run."""
        took = {"duration_seconds": MetadataValue.float(round(time.monotonic() - self.started, 2))}
        failed = [r for r in results if not r.passed]
        if failed:
            what = "; ".join(f"{r.check_name}: {r.description}" for r in failed)
            message = _failed(self.engine, self.context, self.tenant, self.log, self.phase,
                              f"Tenant '{self.tenant.tenant_id}' ({system_label(self.tenant.system)}): "
                              f"the update was stopped by a data check ({what}); the figures budget123 "
                              "shows were not changed. The data team must look at this tenant.").description
            return {**took, "status_message": MetadataValue.text(message)}
        message = self._finish_if_last()
        return {**took, **({"status_message": MetadataValue.text(message)} if message else {})}

    def _finish_if_last(self) -> str | None:
        """The last phase the run selected closes the update with the status message."""
        selected = self.context.run.asset_selection
        system = self.tenant.system
        in_run = [p for p in PHASES if not selected or AssetKey([system, p]) in selected]
        if in_run and in_run[-1] == self.phase:
            message = status.close_run(self.engine, self.run_id, "succeeded", self.tenant.locale)
            self.log.line(self.phase, message)
            return message
        return None


def _trigger(context: AssetExecutionContext) -> str:
    tags = context.run.tags
    if "dagster/backfill" in tags:
        return "backfill"
    return tags.get(TRIGGER_TAG, "manual")


@contextmanager
def sync_step(context: AssetExecutionContext, warehouse: Warehouse, systems: AccountingSystems, phase: str):
    engine = warehouse.engine()
    try:
        tenant = get_tenant(engine, context.partition_key)
    except UnknownTenant as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    full = context.run.tags.get(FULL_TAG) == "true"
    run = (engine, context.run_id, tenant.tenant_id, tenant.system, _trigger(context),
           context.run.tags.get(USER_TAG), full)
    log = status.LiveLog(engine, context.run_id, tenant.tenant_id, locale=tenant.locale, echo=context.log.info)
    try:
        guard.acquire(engine, tenant.tenant_id, context.run_id)
    except guard.TenantBusy as exc:
        # Recorded, but the waiting refresh requests stay with the update that holds the tenant.
        status.open_run(*run, serve_requests=False)
        raise _failed(engine, context, tenant, log, phase, str(exc)) from None
    status.open_run(*run)
    connector = None
    try:
        connector = systems.open(engine, tenant)
        log.secrets = connector.secrets()
        yield Step(context, engine, tenant, connector, log, phase, full)
    except SyncError as exc:
        if exc.needs_new_credentials:
            mark_awaiting_credentials(engine, tenant.tenant_id)
        raise _failed(engine, context, tenant, log, phase, exc.message) from None
    except VaultError as exc:
        raise _failed(engine, context, tenant, log, phase,
                      f"Tenant '{tenant.tenant_id}' ({system_label(tenant.system)}): {exc}") from None
    except Failure:
        raise
    except Exception as exc:
        _failed(engine, context, tenant, log, phase,
                f"Tenant '{tenant.tenant_id}' ({system_label(tenant.system)}): the update stopped on an "
                f"unexpected error ({type(exc).__name__}) while {phase.replace('_', ' ')} were being "
                "updated. Nothing already loaded was lost; the data team can see the details in Dagster.")
        raise
    finally:
        if connector is not None:
            connector.close()
        guard.release(engine, tenant.tenant_id, context.run_id)


def _failed(engine, context, tenant, log, phase, message) -> Failure:
    message = redact(message, log.secrets)
    log.line(phase, message)
    status.close_run(engine, context.run_id, "failed", tenant.locale, message)
    return Failure(description=message, allow_retries=False)


def build_system_graph(system: str, database_kind: str) -> tuple[list, object]:
    """The four assets of one accounting system, and the job that syncs one tenant through them."""
    label = system_label(system)
    partitions = DynamicPartitionsDefinition(name=partitions_name(system))
    common = dict(
        key_prefix=[system], group_name=system, partitions_def=partitions, owners=OWNERS,
        kinds={"python", database_kind, system}, pool=pool_name(system),
    )

    def key(phase: str) -> AssetKey:
        return AssetKey([system, phase])

    def chart_asset(phase: str, load, counter: str, description: str, deps=()):
        """Accounts and dimensions: fetched whole, compared with the warehouse, changes recorded."""
        @asset(name=phase, deps=list(deps), description=description, **common)
        def chart(context: AssetExecutionContext, warehouse: Warehouse, systems: AccountingSystems):
            with sync_step(context, warehouse, systems, phase) as step:
                changes = load(step.engine, step.connector, step.run_id, step.log)
                status.add_counts(step.engine, step.run_id, **{counter: changes.total})
                return MaterializeResult(metadata={**_chart_metadata(changes), **step.finish()})

        return chart

    accounts = chart_asset(
        "accounts", sync.sync_accounts, "accounts_changed",
        f"Each tenant's chart of accounts (kontoplan) from {label}: warehouse tables `accounts` and "
        "`account_changes` (added, renamed, moved, deleted).")
    dimensions = chart_asset(
        "dimensions", sync.sync_dimensions, "dimensions_changed",
        f"Each tenant's dimension values (departments, distributions) from {label}: warehouse tables "
        "`dimension_values` and `dimension_changes`.", deps=[key("accounts")])

    @asset(name="transactions", deps=[key("dimensions")],
           description=f"Each tenant's posted entries (posteringer) from {label}, fetched incrementally "
           "after the stored cursor; never a draft journal line. Warehouse table `transactions`.",
           check_specs=[
               AssetCheckSpec(checks.DRAFT_EXCLUSION, asset=key("transactions"), blocking=True,
                              description="No line of a draft journal (kassekladde) was loaded."),
               AssetCheckSpec(checks.ROW_COUNTS, asset=key("transactions"), blocking=True,
                              description="Fetched = loaded this run; warehouse count = the source's count."),
           ], **common)
    def transactions(context: AssetExecutionContext, warehouse: Warehouse, systems: AccountingSystems):
        with sync_step(context, warehouse, systems, "transactions") as step:
            load = sync.sync_transactions(step.engine, step.connector, step.run_id, step.log, step.full)
            status.add_counts(step.engine, step.run_id, transactions_fetched=load.fetched,
                              transactions_new=load.new)
            results = [
                checks.draft_exclusion(step.engine, step.connector),
                checks.row_counts(step.engine, step.connector, step.run_id, load.fetched,
                                  sync.load_cursor(step.engine, step.tenant.tenant_id)),
            ]
            return MaterializeResult(check_results=results, metadata={
                "fetched": MetadataValue.int(load.fetched), "new": MetadataValue.int(load.new),
                "pages": MetadataValue.int(load.pages), "retired": MetadataValue.int(load.retired),
                "months_to_recompute": MetadataValue.int(load.months),
                **step.finish(results),
            })

    @asset(name="budget_actuals", deps=[key("transactions")],
           description="Posted figures per account, dimension values and month, set against the budget "
           "(realiserede tal). Recomputes only the months new entries touched. Table `budget_actuals`.",
           check_specs=[
               AssetCheckSpec(checks.ACTUALS_MATCH, asset=key("budget_actuals"), blocking=True,
                              description="Actuals equal transactions summed, to the øre."),
               AssetCheckSpec(checks.RECONCILIATION, asset=key("budget_actuals"),
                              description=f"Per account and year, equal to {label}'s own totals."),
           ], **common)
    def budget_actuals(context: AssetExecutionContext, warehouse: Warehouse, systems: AccountingSystems):
        with sync_step(context, warehouse, systems, "budget_actuals") as step:
            months = sync.rebuild_actuals(step.engine, step.tenant.tenant_id, step.log)
            results = [
                checks.actuals_match_transactions(step.engine, step.tenant.tenant_id, months),
                checks.reconciliation(step.engine, step.connector),
            ]
            return MaterializeResult(check_results=results, metadata={
                "months_recomputed": MetadataValue.int(len(months)),
                "months": MetadataValue.text(", ".join(f"{m:%Y-%m}" for m in months) or "none"),
                **step.finish(results[:1]),
            })

    job = define_asset_job(
        job_name(system), selection=AssetSelection.groups(system), partitions_def=partitions,
        description=f"Update one {label} tenant's accounting figures (partition = tenant).",
        # The phases run one after another, so a process per step would add seconds and no speed.
        executor_def=in_process_executor,
    )
    return [accounts, dimensions, transactions, budget_actuals], job


def _chart_metadata(changes: sync.ChartChanges) -> dict:
    return {
        "fetched": MetadataValue.int(changes.fetched), "added": MetadataValue.int(changes.added),
        "renamed": MetadataValue.int(changes.renamed), "moved": MetadataValue.int(changes.moved),
        "deleted": MetadataValue.int(changes.deleted), "changed": MetadataValue.int(changes.changed),
    }
