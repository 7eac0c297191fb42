"""One update of one tenant, set up once and closed in one place, independent of Dagster.

The tenant is read, its lease taken, its `sync_runs` row opened and its credentials decrypted once
per update; the lease is held until the update ends, so no other loader can take the tenant
between two phases. However the update ends (done, an explained failure, a failed data check, an
unexpected error, Ctrl-C), `open_update` closes its row, its requests and its lease.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Callable, Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from b123_pipelines import doctor, guard, status
from b123_pipelines.connectors.base import Connector
from b123_pipelines.connectors.kit.budget import daily_allowance
from b123_pipelines.db import connection_problem, now
from b123_pipelines.errors import SyncError, TenantRemoved, redact, system_label
from b123_pipelines.tenants import Tenant, get_tenant, mark_awaiting_credentials, remember_settings
from b123_pipelines.triggers import local_midnight
from b123_pipelines.vault import VaultError

STOPPED = ("the update stopped unexpectedly; the next update resumes where it stopped, and nothing "
           "already loaded was lost.")


class UpdateFailed(Exception):
    """The update ended without success; its row is closed with `message` already."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    trigger: str = "manual"
    user_id: str | None = None
    full: bool = False


@dataclass
class Update:
    engine: Engine
    tenant: Tenant
    connector: Connector
    log: status.LiveLog
    run: RunInfo
    closed: bool = False

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def who(self) -> str:
        return _who(self.tenant)

    def succeed(self) -> str:
        """Closes the update with the status message, in the tenant's locale."""
        self._keep_learned_settings()
        message = status.close_run(self.engine, self.run_id, "succeeded", self.tenant.locale,
                                   api_calls=self.connector.api_calls)
        self.closed = True
        self.log.line("done", message)
        return message

    def _keep_learned_settings(self) -> None:
        """Best effort: the figures are in; a fact not recorded now is asked again next time."""
        try:
            remember_settings(self.engine, self.tenant_id, self.connector.learned_settings())
        except (SyncError, SQLAlchemyError) as exc:
            self.log.line("done", f"{self.who()}: a setting learned from the source was not kept this time "
                                  f"({type(exc).__name__}); the next update tries again.", echo=False)

    def fail(self, message: str) -> UpdateFailed:
        message = redact(message, self.log.secrets)
        if not self.closed:
            self.log.line("failed", message)
            status.close_run(self.engine, self.run_id, "failed", self.tenant.locale, message,
                             api_calls=self.connector.api_calls)
            self.closed = True
        return UpdateFailed(message)

    def stopped_by_checks(self, what: str) -> UpdateFailed:
        return self.fail(f"{self.who()}: the update was stopped by a data check ({what}); the figures "
                         "budget123 shows were not changed. The data team must look at this tenant.")


@contextmanager
def open_update(engine: Engine, open_connector: Callable[[Engine, Tenant], Connector], tenant_id: str,
                run: RunInfo, echo: Callable[[str], None] | None = None, wait_for_lease: float = 0.0,
                stop: threading.Event | None = None) -> Iterator[Update]:
    """One update, opened and closed. With `wait_for_lease` (seconds), a tenant another update holds
    is waited for, saying so on `echo` once, rather than refused at once; `stop` ends the wait."""
    tenant = get_tenant(engine, tenant_id)
    log = status.LiveLog(engine, run.run_id, tenant_id, locale=tenant.locale,
                         **({"echo": echo} if echo else {}))
    opened = (engine, run.run_id, tenant_id, tenant.system, run.trigger, run.user_id, run.full)

    def waiting(busy: guard.TenantBusy) -> None:
        log.echo(f"[waiting] {_who(tenant)}: another update of this tenant is running (run {busy.run_id}); "
                 f"this one waits for it to end (up to {wait_for_lease / 60:g} minutes).")

    with ExitStack() as lease:
        try:
            lease.enter_context(guard.held(engine, tenant_id, run.run_id, wait_for_lease, waiting, stop))
        except guard.TenantBusy as exc:
            # Recorded, but waiting refresh requests stay with the update that holds the tenant.
            status.open_run(*opened, serve_requests=False)
            raise _close_unopened(engine, run.run_id, tenant, log, str(exc)) from None
        update = None
        try:
            status.open_run(*opened)
            update = Update(engine, tenant, open_connector(engine, tenant), log, run)
            log.secrets = update.connector.secrets()
            spent_today = status.calls_since(engine, tenant_id, local_midnight(now(), tenant.timezone))
            update.connector.transport.allowance = daily_allowance(update.connector.budget, spent_today)
            yield update
            if not update.closed:
                update.succeed()
        except UpdateFailed:
            raise
        except TenantRemoved as exc:
            # Nothing to record: `b123 tenant remove` deletes this update's rows with the tenant's.
            raise UpdateFailed(exc.message) from None
        except SyncError as exc:
            if exc.needs_new_credentials:
                mark_awaiting_credentials(engine, tenant_id)
            # The connection doctor's verdict, when it names a cause the error did not (bounded in time).
            message = doctor.with_verdict(exc, update.connector if update else None, tenant.locale)
            raise _failure(engine, update, tenant, log, run, message) from None
        except VaultError as exc:
            raise _failure(engine, update, tenant, log, run, f"{_who(tenant)}: {exc}") from None
        except Exception as exc:
            # The database itself may be what failed: then recovery.py closes the row later.
            with suppress(Exception):
                _failure(engine, update, tenant, log, run, _unexpected(tenant, run.run_id, exc))
            raise
        except BaseException:  # Ctrl-C, SIGTERM turned into SystemExit, a run being cancelled
            with suppress(Exception):
                _failure(engine, update, tenant, log, run, f"{_who(tenant)}: {STOPPED}")
            raise
        finally:
            if update is not None:
                update.connector.close()


def _who(tenant: Tenant) -> str:
    return f"Tenant '{tenant.tenant_id}' ({system_label(tenant.system)})"


def _unexpected(tenant: Tenant, run_id: str, exc: BaseException) -> str:
    """The message for an error we did not foresee; a lost database connection is said as such."""
    who = _who(tenant)
    problem = connection_problem(exc)
    if problem is not None:
        return (f"{who}: the update stopped because the warehouse database stopped answering ({problem}). "
                "Nothing already loaded was lost; once the database is back, the next update resumes where "
                "this one stopped.")
    return (f"{who}: the update stopped on an unexpected error ({type(exc).__name__}). Nothing already "
            f"loaded was lost; the data team can see the details of run {run_id} in Dagster.")


def _failure(engine, update: Update | None, tenant: Tenant, log, run: RunInfo, message: str) -> UpdateFailed:
    if update is not None:
        return update.fail(message)
    return _close_unopened(engine, run.run_id, tenant, log, message)


def _close_unopened(engine, run_id: str, tenant: Tenant, log, message: str) -> UpdateFailed:
    """Closes a row whose update never got a connector (settings missing, key wrong, tenant busy)."""
    message = redact(message, log.secrets)
    log.line("failed", message)
    status.close_run(engine, run_id, "failed", tenant.locale, message)
    return UpdateFailed(message)
