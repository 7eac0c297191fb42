"""A database-level guard: one process at a time loads a tenant, whatever launched it.

The run tag limit in dagster.yaml keeps a second run of a tenant queued; this lease also holds back
a run of many tenants (which the tag limit cannot see), a run launched by hand, from another
instance or from the CLI. An update takes the lease when it starts, renews it every RENEW_EVERY
while it runs, and gives it back when it ends. An update Dagster started that finds the lease taken
waits for it (up to WAIT_WHEN_BUSY, asking every POLL_BUSY), so a second update of a tenant runs
after the first instead of failing; `b123 sync` refuses at once (someone at a terminal). A lease left by
a process that died is stale: at once when the holder ran on this host and its process is gone,
otherwise once it has not been renewed for STALE_AFTER. A stale lease is taken over, and
`recovery.py` closes the update that left it.

A removed tenant is loaded by nobody: the lease is only taken while the tenant's row exists, and
each page of entries is committed only if it still does (`require_tenant`), so `b123 tenant remove`
deletes the row first, waits for the lease, then deletes the rest.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.db import now, upsert, utc
from b123_pipelines.errors import TenantRemoved

RENEW_EVERY = 15.0  # seconds
STALE_AFTER = dt.timedelta(minutes=2)
#: How long an update started by Dagster waits for another update of its tenant to end: longer than
#: a tenant's usual update, and than a dead holder's lease takes to go stale.
WAIT_WHEN_BUSY = dt.timedelta(minutes=5)
POLL_BUSY = 2.0  # seconds between two tries of a waiting update
HOST = socket.gethostname()


class TenantBusy(Exception):
    def __init__(self, tenant_id: str, run_id: str, waited: float = 0.0):
        self.run_id = run_id
        still = f"still running after this one waited {_duration(waited)} for it" if waited else "running"
        super().__init__(
            f"Tenant '{tenant_id}': another update of this tenant is {still} (run {run_id}); this one "
            "stopped so nothing is loaded twice. The figures will be current when that update ends."
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(lease) -> bool:
    if lease.host == HOST and not alive(lease.pid):
        return True
    return now() - utc(lease.renewed_at) > STALE_AFTER


def stale_leases(engine: Engine) -> list:
    with engine.connect() as conn:
        return [lease for lease in conn.execute(sa.select(t.sync_leases)) if is_stale(lease)]


def acquire(engine: Engine, tenant_id: str, run_id: str) -> None:
    mine = dict(tenant_id=tenant_id, run_id=run_id, host=HOST, pid=os.getpid(), acquired_at=now(),
                renewed_at=now())
    leases = t.sync_leases.c
    with engine.begin() as conn:
        upsert(conn, t.sync_leases, [mine], keys=("tenant_id",), update=False)
        if not _registered(conn, tenant_id):  # removed meanwhile: the removal waits for no lease of ours
            from b123_pipelines.tenants import UnknownTenant

            raise UnknownTenant(tenant_id)
        lease = conn.execute(sa.select(t.sync_leases).where(leases.tenant_id == tenant_id)).first()
        if lease.run_id == run_id and lease.pid == mine["pid"] and lease.host == HOST:
            return
        if lease.run_id != run_id and not is_stale(lease):
            raise TenantBusy(tenant_id, lease.run_id)
        # Ours from an earlier phase, or stale: take it over only if nobody else did meanwhile.
        taken = conn.execute(t.sync_leases.update().where(
            leases.tenant_id == tenant_id, leases.run_id == lease.run_id, leases.pid == lease.pid,
        ).values(**mine)).rowcount
        if not taken:
            raise TenantBusy(tenant_id, lease.run_id)


def _registered(conn, tenant_id: str) -> bool:
    # After this transaction's first write: SQLite then holds its write lock, and on PostgreSQL FOR
    # SHARE makes a removal's DELETE of the row wait until this transaction ends.
    return conn.execute(sa.select(t.tenants.c.tenant_id).where(t.tenants.c.tenant_id == tenant_id)
                        .with_for_update(read=True)).first() is not None


def require_tenant(conn, tenant_id: str, system: str) -> None:
    """Raises TenantRemoved unless the tenant still exists; call it in the transaction that writes
    the tenant's rows, after its writes, so they commit only for a tenant that was not removed."""
    if not _registered(conn, tenant_id):
        raise TenantRemoved(tenant_id, system)


def release(engine: Engine, tenant_id: str, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(t.sync_leases.delete().where(
            t.sync_leases.c.tenant_id == tenant_id, t.sync_leases.c.run_id == run_id,
            t.sync_leases.c.pid == os.getpid()))


def drop(engine: Engine, tenant_id: str, run_id: str) -> None:
    """Removes a dead update's lease, whoever held it."""
    with engine.begin() as conn:
        conn.execute(t.sync_leases.delete().where(
            t.sync_leases.c.tenant_id == tenant_id, t.sync_leases.c.run_id == run_id))


def acquire_waiting(engine: Engine, tenant_id: str, run_id: str, wait: float,
                    waiting: Callable[[TenantBusy], None] | None = None,
                    stop: threading.Event | None = None) -> None:
    """`acquire`, but while another update holds the tenant, tries again every POLL_BUSY for up to
    `wait` seconds; `waiting` hears of the first refusal. Raises TenantBusy when the wait is over
    (or `stop` is set: the run is being stopped) and the tenant is still busy."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            return acquire(engine, tenant_id, run_id)
        except TenantBusy as busy:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                raise TenantBusy(tenant_id, busy.run_id, waited=wait) if wait else busy
            if waiting is not None and not told:
                waiting(busy)
                told = True
            if stop is not None:
                stop.wait(min(POLL_BUSY, left))
            else:
                time.sleep(min(POLL_BUSY, left))


@contextmanager
def held(engine: Engine, tenant_id: str, run_id: str, wait: float = 0.0,
         waiting: Callable[[TenantBusy], None] | None = None,
         stop: threading.Event | None = None) -> Iterator[None]:
    """The lease for the length of the block, renewed in the background so a live update's lease
    never looks stale, however long one page takes. Waits up to `wait` seconds for a busy tenant
    (`acquire_waiting`)."""
    acquire_waiting(engine, tenant_id, run_id, wait, waiting, stop)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(RENEW_EVERY):
            try:
                with engine.begin() as conn:
                    conn.execute(t.sync_leases.update().where(
                        t.sync_leases.c.tenant_id == tenant_id, t.sync_leases.c.run_id == run_id,
                    ).values(renewed_at=now()))
            except sa.exc.SQLAlchemyError:
                pass  # one missed renewal is harmless: a lease goes stale only after eight

    renewer = threading.Thread(target=renew, name=f"lease-{tenant_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        release(engine, tenant_id, run_id)
