"""A database-level guard: one process at a time loads a tenant, whatever launched it.

The run tag limit in dagster.yaml keeps a second run of a tenant queued; this lease also stops a
run launched by hand, from another instance or from the CLI. A phase takes the lease when it starts
and gives it back when it ends. A lease left by a process that died is taken over: at once when
the holder ran on this host and its process is gone, otherwise after STALE_AFTER.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.db import now, upsert, utc

STALE_AFTER = dt.timedelta(hours=6)
HOST = socket.gethostname()


class TenantBusy(Exception):
    def __init__(self, tenant_id: str, run_id: str):
        self.run_id = run_id
        super().__init__(
            f"Tenant '{tenant_id}': another update of this tenant is running (run {run_id}); this one "
            "stopped so nothing is loaded twice. The figures will be current when that update ends."
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(lease) -> bool:
    if lease.host == HOST and not _alive(lease.pid):
        return True
    return now() - utc(lease.acquired_at) > STALE_AFTER


def acquire(engine: Engine, tenant_id: str, run_id: str) -> None:
    mine = dict(tenant_id=tenant_id, run_id=run_id, host=HOST, pid=os.getpid(), acquired_at=now())
    leases = t.sync_leases.c
    with engine.begin() as conn:
        upsert(conn, t.sync_leases, [mine], keys=("tenant_id",), update=False)
        lease = conn.execute(sa.select(t.sync_leases).where(leases.tenant_id == tenant_id)).first()
        if lease.run_id == run_id and lease.pid == mine["pid"] and lease.host == HOST:
            return
        if lease.run_id != run_id and not _stale(lease):
            raise TenantBusy(tenant_id, lease.run_id)
        # Ours from an earlier phase, or stale: take it over only if nobody else did meanwhile.
        taken = conn.execute(t.sync_leases.update().where(
            leases.tenant_id == tenant_id, leases.run_id == lease.run_id, leases.pid == lease.pid,
        ).values(**mine)).rowcount
        if not taken:
            raise TenantBusy(tenant_id, lease.run_id)


def release(engine: Engine, tenant_id: str, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(t.sync_leases.delete().where(
            t.sync_leases.c.tenant_id == tenant_id, t.sync_leases.c.run_id == run_id,
            t.sync_leases.c.pid == os.getpid()))
