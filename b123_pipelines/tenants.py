"""Tenants and their connections, as the budget123 app stores them (the CLI writes them for dev)."""

from __future__ import annotations

import os
import re
import signal
import time
import unicodedata
import zoneinfo
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from b123_pipelines import guard
from b123_pipelines import tables as t
from b123_pipelines.connectors import connector_class
from b123_pipelines.connectors.base import Connector
from b123_pipelines.db import now, upsert
from b123_pipelines.errors import ConfigurationError
from b123_pipelines.token_caches import VaultTokenStore, forget_tokens
from b123_pipelines.vault import Vault

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the whole id: fullmatch, so no trailing newline


class UnknownTenant(LookupError):
    def __init__(self, tenant_id: str):
        super().__init__(
            f"Tenant '{tenant_id}' is not known to budget123. List tenants with 'b123 tenant list'."
        )


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    system: str
    timezone: str
    locale: str
    enabled: bool
    awaiting_credentials: bool


def get_tenant(engine: Engine, tenant_id: str) -> Tenant:
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.tenants).where(t.tenants.c.tenant_id == tenant_id)).mappings().first()
    if row is None:
        raise UnknownTenant(tenant_id)
    return Tenant(**{k: row[k] for k in Tenant.__dataclass_fields__})


def list_tenants(engine: Engine) -> list[Tenant]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.tenants).order_by(t.tenants.c.tenant_id)).mappings().all()
    return [Tenant(**{k: r[k] for k in Tenant.__dataclass_fields__}) for r in rows]


def fitting_text(value: str, column: sa.Column, what: str) -> str:
    """`value` if it can be stored in `column`: not blank, no control character, not too long;
    else a ValueError naming `what` (the field as the user gave it) and the limit."""
    limit = column.type.length
    if not value.strip():
        raise ValueError(f"{what} must not be empty.")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long; at most {limit} fit.")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{what} contains a control character (e.g. a line break); leave it out.")
    return value


def validate_new_tenant(tenant_id: str, system: str, timezone: str, locale: str, name: str | None = None) -> None:
    if not TENANT_ID.fullmatch(tenant_id):
        raise ValueError(
            f"Tenant id {tenant_id!r} is not valid: use lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters."
        )
    connector_class(system)
    if name is not None:
        fitting_text(name, t.tenants.c.name, f"Tenant '{tenant_id}': the name (--name)")
    fitting_text(timezone, t.tenants.c.timezone, f"Tenant '{tenant_id}': the time zone (--timezone)")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"Tenant '{tenant_id}': unknown time zone '{timezone}' (e.g. Europe/Copenhagen).") from None
    if locale not in ("da", "en"):
        raise ValueError(f"Tenant '{tenant_id}': locale must be 'da' or 'en', not '{locale}'.")


def tenant_tables() -> list[sa.Table]:
    """Every table with rows of a tenant: app, warehouse and operations tables alike."""
    return [table for table in t.all_tables() if "tenant_id" in table.c]


def leftovers(conn, tenant_id: str) -> list[str]:
    """The tables still holding rows of a tenant id that is not registered (kept with --keep-data,
    or left by a removal that did not finish)."""
    return [table.name for table in tenant_tables() if conn.execute(
        sa.select(sa.literal(1)).select_from(table).where(table.c.tenant_id == tenant_id).limit(1)).first()]


def check_new_tenant_id(conn, tenant_id: str) -> None:
    """A new tenant starts clean: its id is neither registered nor holding rows of a removed tenant."""
    exists = conn.execute(sa.select(t.tenants.c.tenant_id).where(t.tenants.c.tenant_id == tenant_id)).first()
    if exists:
        raise ValueError(f"Tenant '{tenant_id}' exists already; remove it first or use 'b123 tenant credentials'.")
    left = leftovers(conn, tenant_id)
    if left:
        raise ValueError(
            f"Tenant id '{tenant_id}' still has rows of a removed tenant (in {', '.join(left)}), which a new "
            f"tenant would inherit. Delete them with 'b123 tenant remove {tenant_id}', or choose another id.")


def add_tenant(engine, vault: Vault, tenant_id, system, name, connection: dict,
               timezone="Europe/Copenhagen", locale="da") -> Tenant:
    validate_new_tenant(tenant_id, system, timezone, locale, name)
    settings = connector_class(system).parse_connection(tenant_id, connection)
    with engine.begin() as conn:
        check_new_tenant_id(conn, tenant_id)
        conn.execute(t.tenants.insert().values(
            tenant_id=tenant_id, name=name, system=system, timezone=timezone, locale=locale,
            enabled=True, awaiting_credentials=False, created_at=now(),
        ))
        _store_connection(conn, vault, tenant_id, settings)
    return get_tenant(engine, tenant_id)


def store_credentials(engine, vault: Vault, tenant_id: str, connection: dict) -> None:
    """New credentials (e.g. a new e-conomic access ID): the tenant syncs again from its cursor."""
    tenant = get_tenant(engine, tenant_id)
    settings = connector_class(tenant.system).parse_connection(tenant_id, connection)
    with engine.begin() as conn:
        _store_connection(conn, vault, tenant_id, settings)
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == tenant_id)
                     .values(awaiting_credentials=False))


def _store_connection(conn, vault, tenant_id, settings) -> None:
    secret, plain = {}, {}
    for field, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            secret[field] = value.get_secret_value()
        else:
            plain[field] = value
    for table, values in (
        (t.connection_settings, {"settings": plain}),
        (t.credentials, {"ciphertext": vault.encrypt(secret), "updated_at": now()}),
    ):
        conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
        conn.execute(table.insert().values(tenant_id=tenant_id, **values))
    forget_tokens(conn, tenant_id)  # tokens of the old credentials are not the new ones'


# What `--keep-data` keeps: the figures and the record of the updates that loaded them. The loading
# state (cursors, months to recompute, live log) goes with the tenant either way.
FIGURES = {table.name for table in (t.accounts, t.account_changes, t.dimension_values, t.dimension_changes,
                                    t.transactions, t.budget_actuals, t.sync_runs)}
STOP_GRACE = 15.0  # seconds a stopped update has to end


@dataclass
class Removal:
    tenant: Tenant | None  # None: it was removed before, and rows left of it were deleted now
    deleted: int = 0  # rows deleted
    kept: dict[str, int] = field(default_factory=dict)  # table -> rows kept (keep_data)
    running: str | None = None  # the run id of an update that was running
    signalled: bool = False  # it did not end in time and was sent SIGTERM
    still_running: bool = False  # it had not ended even so (another host): it loads no more pages


def remove_tenant(engine, tenant_id: str, keep_data: bool = False, wait: float = 120.0,
                  say: Callable[[str], None] | None = None) -> Removal:
    """Removes the tenant and everything stored for it, app and warehouse rows alike (`keep_data`:
    except its figures). Its row goes first, so no update starts and a running one commits no more
    pages (guard.require_tenant); a running update is waited for up to `wait` seconds, then stopped,
    before the rest is deleted. An id whose tenant is gone but whose rows are not is cleaned up."""
    say = say or (lambda _: None)
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.tenants).where(t.tenants.c.tenant_id == tenant_id)).mappings().first()
        if row is None and not leftovers(conn, tenant_id):
            raise UnknownTenant(tenant_id)
        conn.execute(t.tenants.delete().where(t.tenants.c.tenant_id == tenant_id))
    removal = Removal(Tenant(**{k: row[k] for k in Tenant.__dataclass_fields__}) if row else None)
    _end_running_update(engine, tenant_id, wait, removal, say)
    with engine.begin() as conn:
        for table in tenant_tables():
            mine = table.c.tenant_id == tenant_id
            if keep_data and table.name in FIGURES:
                kept = conn.execute(sa.select(sa.func.count()).select_from(table).where(mine)).scalar()
                if kept:
                    removal.kept[table.name] = kept
            else:
                removal.deleted += conn.execute(table.delete().where(mine)).rowcount
    return removal


def _end_running_update(engine, tenant_id: str, wait: float, removal: Removal, say) -> None:
    with engine.connect() as conn:
        lease = conn.execute(sa.select(t.sync_leases).where(t.sync_leases.c.tenant_id == tenant_id)).first()
    if lease is None or guard.is_stale(lease):
        return
    removal.running = lease.run_id
    say(f"Update run {lease.run_id} of tenant '{tenant_id}' is running; it stops before its next page. "
        f"Waiting up to {wait:g} s for it to end.")
    if _lease_gone(engine, lease, wait):
        return
    removal.signalled = True
    if lease.host == guard.HOST and lease.pid != os.getpid() and guard.alive(lease.pid):
        say(f"It did not end within {wait:g} s: stopping it (SIGTERM to process {lease.pid}).")
        with suppress(ProcessLookupError, PermissionError):
            os.kill(lease.pid, signal.SIGTERM)
        if _lease_gone(engine, lease, STOP_GRACE):
            return
    removal.still_running = True


def _lease_gone(engine, lease, seconds: float) -> bool:
    """Waits up to `seconds` for the update holding `lease` to give it back (or die)."""
    deadline = time.monotonic() + seconds
    leases = t.sync_leases.c
    while True:
        with engine.connect() as conn:
            now_held = conn.execute(sa.select(t.sync_leases).where(
                leases.tenant_id == lease.tenant_id, leases.run_id == lease.run_id)).first()
        if now_held is None or guard.is_stale(now_held):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def mark_awaiting_credentials(engine, tenant_id: str, waiting: bool = True) -> None:
    with engine.begin() as conn:
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == tenant_id)
                     .values(awaiting_credentials=waiting))


def remember_settings(engine, tenant_id: str, learned: dict) -> None:
    """Adds what the source told about itself to the tenant's non-secret settings, never
    overwriting a setting the connection already has."""
    if not learned:
        return
    column = t.connection_settings.c
    with engine.begin() as conn:
        plain = conn.execute(sa.select(column.settings).where(column.tenant_id == tenant_id)).scalar()
        missing = {k: v for k, v in learned.items() if plain is not None and plain.get(k) is None}
        if missing:
            conn.execute(t.connection_settings.update().where(column.tenant_id == tenant_id)
                         .values(settings={**plain, **missing}))


def open_connector(engine, vault: Vault, tenant: Tenant, http: dict | None = None) -> Connector:
    cls = connector_class(tenant.system)
    with engine.connect() as conn:
        plain = conn.execute(sa.select(t.connection_settings.c.settings)
                             .where(t.connection_settings.c.tenant_id == tenant.tenant_id)).scalar()
        cipher = conn.execute(sa.select(t.credentials.c.ciphertext)
                              .where(t.credentials.c.tenant_id == tenant.tenant_id)).scalar()
    if plain is None or cipher is None:
        raise ConfigurationError(
            tenant.tenant_id, tenant.system, "no connection to the accounting system is stored.",
            "Store one with 'b123 tenant credentials'.",
        )
    settings = cls.parse_connection(tenant.tenant_id, {**plain, **vault.decrypt(cipher)})
    return cls(tenant_id=tenant.tenant_id, settings=settings, http=http or {},
               token_store=VaultTokenStore(engine, vault, tenant.tenant_id))


def record_credential_check(engine, tenant_id: str, ok: bool, warning: str | None) -> None:
    with engine.begin() as conn:
        upsert(conn, t.credential_checks, [dict(tenant_id=tenant_id, checked_at=now(), ok=ok, warning=warning)],
               keys=("tenant_id",))


# ---------------------------------------------------------------- what the app writes (the CLI, for dev)
def add_role(engine, role: str, can_fetch_figures: bool) -> None:
    fitting_text(role, t.roles.c.role, "The role (ROLE)")
    with engine.begin() as conn:
        upsert(conn, t.roles, [dict(role=role, can_fetch_figures=can_fetch_figures)], keys=("role",))


def add_user(engine, user_id: str, tenant_id: str, role: str, auto_refresh: bool) -> None:
    fitting_text(user_id, t.users.c.user_id, "The user id (USER)")
    get_tenant(engine, tenant_id)
    with engine.begin() as conn:
        if conn.execute(sa.select(t.roles.c.role).where(t.roles.c.role == role)).first() is None:
            raise ValueError(f"Role '{role}' does not exist; add it with 'b123 role add {role}'.")
        conn.execute(t.users.delete().where(t.users.c.user_id == user_id))
        conn.execute(t.users.insert().values(user_id=user_id, tenant_id=tenant_id, role=role,
                                             auto_refresh=auto_refresh))


def _user_tenant(conn, user_id: str) -> str:
    tenant_id = conn.execute(sa.select(t.users.c.tenant_id).where(t.users.c.user_id == user_id)).scalar()
    if tenant_id is None:
        raise ValueError(f"User '{user_id}' does not exist; add it with 'b123 user add'.")
    return tenant_id


def record_login(engine, user_id: str, at=None) -> int:
    with engine.begin() as conn:
        tenant_id = _user_tenant(conn, user_id)
        return conn.execute(t.user_logins.insert().values(
            user_id=user_id, tenant_id=tenant_id, logged_in_at=at or now())).inserted_primary_key[0]


def check_requester(engine, tenant_id: str, user_id: str) -> None:
    """A refresh request from the CLI must name a user of that tenant (the app's own rows may not:
    the sensor refuses those with a reason)."""
    with engine.connect() as conn:
        users_tenant = _user_tenant(conn, user_id)
    if users_tenant != tenant_id:
        raise ValueError(f"User '{user_id}' belongs to tenant '{users_tenant}', not '{tenant_id}'.")


def request_refresh(engine, tenant_id: str, user_id: str) -> int:
    get_tenant(engine, tenant_id)
    with engine.begin() as conn:
        return conn.execute(t.sync_requests.insert().values(
            tenant_id=tenant_id, user_id=user_id, requested_at=now(), state="new")).inserted_primary_key[0]
