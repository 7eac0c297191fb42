"""`b123`: the command line for the data team, development and the demo.

Exit codes: 0 done, 1 the update failed (the message says why and what to do) or the warehouse
database needs `b123 db upgrade`, 2 bad input (also a database that cannot be used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import sqlalchemy as sa

from b123_pipelines import db, settings
from b123_pipelines import tables as t
from b123_pipelines.connectors import CONNECTORS, connector_class
from b123_pipelines.db import SchemaOutOfDate, engine_for
from b123_pipelines.errors import SyncError
from b123_pipelines.tenants import (
    UnknownTenant,
    add_role,
    add_tenant,
    add_user,
    check_new_tenant_id,
    check_requester,
    fitting_text,
    get_tenant,
    list_tenants,
    record_login,
    remove_tenant,
    request_refresh,
    store_credentials,
    validate_new_tenant,
)
from b123_pipelines.vault import Vault, VaultError, check_key_setting, vault_for_storing


class InputError(Exception):
    pass


def _engine():
    """The warehouse; on SQLite the file is made (and migrated) if it is not there yet."""
    return engine_for(settings.database_url())


def _stored():
    """The warehouse, or None when the embedded SQLite file does not exist yet: nothing is stored,
    and a command that only reads (or fails on input) must not make it."""
    url = settings.database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return _engine()


def _tenant(tenant_id: str):
    engine = _stored()
    if engine is None:
        raise UnknownTenant(tenant_id)
    return engine, get_tenant(engine, tenant_id)


def _connection(tenant_id: str, raw: str) -> dict:
    """--connection's JSON: given as is, or '@FILE' (read from a file) or '-' (read from stdin), which
    keep secrets out of `ps` and the shell's history."""
    source = ""
    if raw == "-":
        raw, source = sys.stdin.read(), " (from stdin)"
    elif raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        try:
            raw, source = path.read_text(encoding="utf-8"), f" (from {path})"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise InputError(f"Tenant '{tenant_id}': cannot read --connection file {path}: {reason}.") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"Tenant '{tenant_id}': --connection is not valid JSON{source} ({exc.msg} at "
                         f"character {exc.pos}). Example: '{{\"grant_token\": \"...\", ...}}'") from None
    if not isinstance(value, dict):
        raise InputError(f"Tenant '{tenant_id}': --connection must be a JSON object{source}, e.g. "
                         "'{\"grant_token\": \"...\"}'.")
    return value


def _vault(engine, tenant_id: str) -> Vault:
    """The key to store `tenant_id`'s credentials with; one that would orphan the others' is refused."""
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(t.credentials.c.tenant_id, t.credentials.c.ciphertext)).all())
    return vault_for_storing(stored, tenant_id)


def cmd_tenant_add(args) -> int:
    # All input first: a command that fails on its input creates nothing (no database, no key).
    validate_new_tenant(args.tenant, args.system, args.timezone, args.locale, args.name)
    connection = _connection(args.tenant, args.connection)
    connector_class(args.system).parse_connection(args.tenant, connection)
    check_key_setting()
    engine = _engine()
    with engine.connect() as conn:
        check_new_tenant_id(conn, args.tenant)
    tenant = add_tenant(engine, _vault(engine, args.tenant), args.tenant, args.system, args.name,
                        connection, args.timezone, args.locale)
    from b123_pipelines.runner import ensure_partition, local_instance

    ensure_partition(local_instance(), tenant.system, tenant.tenant_id)
    print(f"Added tenant '{tenant.tenant_id}' ({tenant.name}, {tenant.system}).")
    return 0


def cmd_tenant_credentials(args) -> int:
    connection = _connection(args.tenant, args.connection)
    engine, tenant = _tenant(args.tenant)
    connector_class(tenant.system).parse_connection(tenant.tenant_id, connection)
    check_key_setting()
    store_credentials(engine, _vault(engine, tenant.tenant_id), tenant.tenant_id, connection)
    print(f"Stored new credentials for tenant '{args.tenant}'; its next update resumes where it stopped.")
    return 0


def cmd_tenant_list(args) -> int:
    engine = _stored()
    for tenant in list_tenants(engine) if engine is not None else []:
        flags = [f for f, on in (("disabled", not tenant.enabled),
                                 ("awaiting new credentials", tenant.awaiting_credentials)) if on]
        print(f"{tenant.tenant_id}\t{tenant.system}\t{tenant.name}\t{tenant.timezone}\t{tenant.locale}"
              + (f"\t({', '.join(flags)})" if flags else ""))
    return 0


def _set_enabled(tenant_id: str, enabled: bool):
    """Sets the tenant's `enabled` flag (the one the app's admin sets); returns the tenant as it was."""
    engine = _engine()
    tenant = get_tenant(engine, tenant_id)
    with engine.begin() as conn:
        conn.execute(t.tenants.update().where(t.tenants.c.tenant_id == tenant.tenant_id).values(enabled=enabled))
    return engine, tenant


def cmd_tenant_pause(args) -> int:
    engine, tenant = _set_enabled(args.tenant, False)
    who = f"tenant '{tenant.tenant_id}' ({tenant.name}, {tenant.system})"
    print(("Tenant was paused already: " if not tenant.enabled else "Paused ") + who + ". The sensors start no "
          "update for it: logins start none and refresh requests are refused (\"the tenant is disabled\"). "
          f"'b123 sync {tenant.tenant_id}' and the UI still update it by hand. "
          f"'b123 tenant resume {tenant.tenant_id}' resumes it.")
    runs = t.sync_runs.c
    with engine.connect() as conn:
        running = conn.execute(sa.select(runs.run_id).where(runs.tenant_id == tenant.tenant_id,
                                                            runs.status == "running")).scalars().all()
    for run_id in running:
        print(f"Update run {run_id} is still running and finishes; cancel it in the Dagster UI to stop it now.")
    return 0


def cmd_tenant_resume(args) -> int:
    _, tenant = _set_enabled(args.tenant, True)
    print(("Tenant was not paused: " if tenant.enabled else "Resumed ")
          + f"tenant '{tenant.tenant_id}' ({tenant.name}, {tenant.system}). Its next login or refresh request "
          "updates it, from where the last update stopped"
          + (" (it still waits for new credentials: 'b123 tenant credentials')." if tenant.awaiting_credentials
             else "."))
    return 0


def cmd_tenant_remove(args) -> int:
    if args.wait < 0:
        raise InputError(f"--wait must be a number of seconds, 0 or more, not {args.wait:g}.")
    engine = _stored()
    if engine is None:
        raise UnknownTenant(args.tenant)
    removal = remove_tenant(engine, args.tenant, keep_data=args.keep_data, wait=args.wait, say=print)
    from b123_pipelines.assets import partitions_name
    from b123_pipelines.runner import local_instance

    instance = local_instance()
    for system in [removal.tenant.system] if removal.tenant else list(CONNECTORS):
        if instance.has_dynamic_partition(partitions_name(system), args.tenant):
            instance.delete_dynamic_partition(partitions_name(system), args.tenant)
    if removal.running and not removal.still_running:
        print(f"Update run {removal.running} ended" + (" when stopped" if removal.signalled else "")
              + "; it loaded nothing after the removal.")
    if removal.tenant is None:
        print(f"Tenant '{args.tenant}' had been removed already; deleted the {removal.deleted:,} rows left of it.")
    else:
        tenant = removal.tenant
        print(f"Removed tenant '{tenant.tenant_id}' ({tenant.name}, {tenant.system}): deleted {removal.deleted:,} "
              + ("rows: its app rows, cursors and live log." if args.keep_data else
                 "rows: its figures, cursors, live log and app rows."))
    if removal.kept:
        print(f"KEPT, as asked (--keep-data): its warehouse rows ("
              + ", ".join(f"{table} {n:,}" for table, n in removal.kept.items())
              + f"). The id '{args.tenant}' cannot be added again until 'b123 tenant remove {args.tenant}' "
              "deletes them.")
    if removal.still_running:
        print(f"Warning: update run {removal.running} had not ended even so (it runs on another machine?). It "
              "can load no more entries for this tenant; once it has ended, run "
              f"'b123 tenant remove {args.tenant}' again to delete what it wrote while stopping.", file=sys.stderr)
        return 1
    return 0


def cmd_sync(args) -> int:
    from b123_pipelines.runner import run_sync

    _tenant(args.tenant)
    outcome = run_sync(args.tenant, full=args.full)
    print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
    if not outcome.ok:
        # Dagster's own account, with stack traces, stays in Dagster's logs, not on the terminal.
        print(f"details: run {outcome.run_id} in the Dagster UI (make ui)", file=sys.stderr)
    return 0 if outcome.ok else 1


def cmd_doctor(args) -> int:
    """The connection doctor: one line per check in the tenant's locale; 0 all ok, 1 something to fix."""
    from b123_pipelines.doctor import DOCTOR_HTTP, examine
    from b123_pipelines.tenants import open_connector

    engine, tenant = _tenant(args.tenant)
    vault = Vault.from_environment()
    report = examine(engine, tenant, lambda e, tn: open_connector(e, vault, tn, DOCTOR_HTTP))
    print("\n".join(report.lines()))
    return report.exit_code


def cmd_actuals(args) -> int:
    from b123_pipelines.figures import actuals_pivot

    engine, tenant = _tenant(args.tenant)
    pivot = actuals_pivot(engine, tenant.tenant_id, args.year, args.dimension)
    if pivot.empty:
        print(f"Tenant '{tenant.tenant_id}' has no actuals{f' in {args.year}' if args.year else ''}"
              f"{f' for dimension value {args.dimension}' if args.dimension else ''}.")
        return 0
    with _wide_output():
        print(pivot.to_string())
    return 0


def _wide_output():
    import pandas as pd

    return pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", None)


def cmd_status(args) -> int:
    engine, tenant = _tenant(args.tenant)
    runs = t.sync_runs.c
    with engine.connect() as conn:
        last = conn.execute(sa.select(t.sync_runs).where(runs.tenant_id == tenant.tenant_id)
                            .order_by(runs.started_at.desc()).limit(1)).mappings().first()
        good = conn.execute(sa.select(sa.func.max(runs.finished_at)).where(
            runs.tenant_id == tenant.tenant_id, runs.status == "succeeded")).scalar()
    print(f"Tenant:        {tenant.tenant_id} ({tenant.name}, {tenant.system})")
    print(f"Last updated:  {good.isoformat(timespec='seconds') if good else 'never'}")
    if last:
        print(f"Last result:   {last['status']} ({last['trigger']}, started {last['started_at'].isoformat(timespec='seconds')})")
        print(f"Last message:  {last['message'] or '(running)'}")
    if tenant.awaiting_credentials:
        print("Attention:     the accounting system refused the stored credentials; new ones are needed.")
    return 0


def cmd_role_add(args) -> int:
    fitting_text(args.role, t.roles.c.role, "The role (ROLE)")
    add_role(_engine(), args.role, args.can_fetch_figures)
    print(f"Role '{args.role}' {'may' if args.can_fetch_figures else 'may not'} fetch accounting figures.")
    return 0


def cmd_user_add(args) -> int:
    fitting_text(args.user, t.users.c.user_id, "The user id (USER)")
    engine, _ = _tenant(args.tenant)
    add_user(engine, args.user, args.tenant, args.role, args.auto_refresh)
    print(f"User '{args.user}' of tenant '{args.tenant}', role '{args.role}', "
          f"auto-refresh at first login {'on' if args.auto_refresh else 'off'}.")
    return 0


def cmd_login(args) -> int:
    at = _instant(args.at) if args.at else None
    engine = _stored()
    if engine is None:
        raise InputError(f"User '{args.user}' does not exist; add it with 'b123 user add'.")
    login_id = record_login(engine, args.user, at)
    print(f"Recorded login {login_id} of '{args.user}'.")
    return 0


def cmd_refresh(args) -> int:
    engine, _ = _tenant(args.tenant)
    check_requester(engine, args.tenant, args.user)
    request_id = request_refresh(engine, args.tenant, args.user)
    print(f"Recorded refresh request {request_id} for tenant '{args.tenant}' by '{args.user}'.")
    return 0


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--at '{text}' is not an ISO time such as 2026-11-28T08:30:00+01:00.") from None
    if value.tzinfo is None:
        raise InputError(f"--at '{text}' needs a UTC offset, e.g. 2026-11-28T08:30:00+01:00.")
    return value.astimezone(dt.timezone.utc)


def cmd_db_upgrade(args) -> int:
    url = settings.database_url()
    engine = db.new_engine(url)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine, app_tables=args.app_tables)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    print(f"Warehouse database at {db.display_url(url)}: revision {before or 'none'} -> {after}"
          + (", app tables created where missing." if args.app_tables else "."))
    return 0


def cmd_db_current(args) -> int:
    url = settings.database_url()
    engine = db.new_engine(url)
    try:
        current = db.current_revision(engine)
    finally:
        engine.dispose()
    head = db.head_revision()
    print(f"{current or 'none'} " + ("(head)" if current == head else
                                    f"(this version of b123-pipelines needs {head}; run 'b123 db upgrade')"))
    return 0


def cmd_regrant_url(args) -> int:
    from b123_pipelines.regrant import installation_url

    print(installation_url(args.tenant, args.user, _engine()))
    return 0


def cmd_regrant_serve(args) -> int:
    from b123_pipelines.regrant import CALLBACK_PATH, CallbackServer

    try:
        server = CallbackServer(_engine(), Vault.from_environment(), args.host, args.port)
    except OSError as exc:
        raise InputError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    print(f"Answering e-conomic's callbacks at {server.url}{CALLBACK_PATH} (B123_PUBLIC_URL must lead here). "
          "Updates are requested for the refresh_requests sensor (make up). Ctrl-C stops.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def cmd_demo(args) -> int:
    from b123_pipelines.demo import run_demo

    return run_demo(entries=args.entries)


CONNECTION_SOURCES = ("'@FILE' reads it from a file and '-' from stdin, which keeps secrets out of "
                      "'ps' and the shell's history")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="b123", description="budget123's accounting-data sync.")
    sub = p.add_subparsers(dest="command", required=True)

    tenant = sub.add_parser("tenant", help="add, list, pause, resume, remove tenants; store credentials").add_subparsers(
        dest="tenant_command", required=True)
    add = tenant.add_parser("add", help="register a tenant and its connection")
    add.add_argument("tenant")
    add.add_argument("--system", required=True, choices=sorted(CONNECTORS))
    add.add_argument("--name", required=True)
    add.add_argument("--timezone", default="Europe/Copenhagen")
    add.add_argument("--locale", default="da", choices=["da", "en"])
    add.add_argument("--connection", required=True, help="JSON, e.g. for e-conomic "
                     '{"base_url": ..., "app_secret_token": ..., "grant_token": ...}; ' + CONNECTION_SOURCES)
    add.set_defaults(func=cmd_tenant_add)
    creds = tenant.add_parser("credentials", help="store new credentials (e.g. a new access ID)")
    creds.add_argument("tenant")
    creds.add_argument("--connection", required=True, help="JSON as for 'tenant add'; " + CONNECTION_SOURCES)
    creds.set_defaults(func=cmd_tenant_credentials)
    tenant.add_parser("list", help="list tenants").set_defaults(func=cmd_tenant_list)
    pause = tenant.add_parser("pause", help="stop automatic updates of a tenant (tenants.enabled = false)")
    pause.add_argument("tenant")
    pause.set_defaults(func=cmd_tenant_pause)
    resume = tenant.add_parser("resume", help="let the sensors update a paused tenant again")
    resume.add_argument("tenant")
    resume.set_defaults(func=cmd_tenant_resume)
    rm = tenant.add_parser("remove", help="remove a tenant and all its rows (a running update is stopped)")
    rm.add_argument("tenant")
    rm.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                    help="how long a running update of the tenant may take to end before it is stopped (default 120)")
    rm.add_argument("--keep-data", action="store_true",
                    help="keep its warehouse figures (accounts, dimensions, transactions, actuals, runs)")
    rm.set_defaults(func=cmd_tenant_remove)

    sync = sub.add_parser("sync", help="update one tenant's accounting figures now")
    sync.add_argument("tenant")
    sync.add_argument("--full", action="store_true", help="fetch everything again; retire what the source no longer has")
    sync.set_defaults(func=cmd_sync)

    st = sub.add_parser("status", help="last updated, last result, last message")
    st.add_argument("tenant")
    st.set_defaults(func=cmd_status)

    act = sub.add_parser("actuals", help="the tenant's actuals: accounts by months, exact, with totals")
    act.add_argument("tenant")
    act.add_argument("--year", type=int, help="one calendar year, e.g. 2025")
    act.add_argument("--dimension", help="only entries carrying this dimension value's code")
    act.set_defaults(func=cmd_actuals)

    doc = sub.add_parser("doctor", help="check the tenant's connection, the manual's checklist (exit 1: something to fix)")
    doc.add_argument("tenant")
    doc.set_defaults(func=cmd_doctor)

    role = sub.add_parser("role", help="roles (what the app writes)").add_subparsers(dest="role_command", required=True)
    role_add = role.add_parser("add", help="add or change a role")
    role_add.add_argument("role")
    role_add.add_argument("--can-fetch-figures", action="store_true")
    role_add.set_defaults(func=cmd_role_add)

    user = sub.add_parser("user", help="users (what the app writes)").add_subparsers(dest="user_command", required=True)
    user_add = user.add_parser("add", help="add or change a user")
    user_add.add_argument("user")
    user_add.add_argument("--tenant", required=True)
    user_add.add_argument("--role", required=True)
    user_add.add_argument("--auto-refresh", action="store_true", help="update at the user's first login of the day")
    user_add.set_defaults(func=cmd_user_add)

    login = sub.add_parser("login", help="record a user's login (what the app writes)")
    login.add_argument("user")
    login.add_argument("--at", help="ISO time with offset; default now")
    login.set_defaults(func=cmd_login)

    refresh = sub.add_parser("refresh", help="record an 'Update accounting figures' request")
    refresh.add_argument("tenant")
    refresh.add_argument("--user", required=True)
    refresh.set_defaults(func=cmd_refresh)

    database = sub.add_parser("db", help="the warehouse database's schema (migrations)").add_subparsers(
        dest="db_command", required=True)
    db_upgrade = database.add_parser(
        "upgrade", help="migrate B123_DATABASE_URL's warehouse and operations tables to this version "
        "(production: before deploying it); SQLite upgrades itself")
    db_upgrade.add_argument("--app-tables", action="store_true",
                            help="also create the app's tables where missing, for development and tests; "
                                 "in production the budget123 app owns them")
    db_upgrade.set_defaults(func=cmd_db_upgrade)
    database.add_parser("current", help="the database's schema revision, and whether it is this version's"
                        ).set_defaults(func=cmd_db_current)

    regrant = sub.add_parser("regrant", help="e-conomic: a new access ID in one click (\"Fetch new token "
                             "automatically\")").add_subparsers(dest="regrant_command", required=True)
    regrant_url = regrant.add_parser("url", help="print the installation URL the app's button opens for a user")
    regrant_url.add_argument("tenant")
    regrant_url.add_argument("--user", required=True, help="the user who asks; the update is requested in their name")
    regrant_url.set_defaults(func=cmd_regrant_url)
    regrant_serve = regrant.add_parser("serve", help="answer e-conomic's callbacks (GET /economic/callback): "
                                       "store the new grant, resume the tenant, request an update")
    regrant_serve.add_argument("--host", default="127.0.0.1")
    regrant_serve.add_argument("--port", type=int, default=8790)
    regrant_serve.set_defaults(func=cmd_regrant_serve)

    demo = sub.add_parser("demo", help="run the demo against the embedded e-conomic emulator")
    demo.add_argument("--entries", type=int, default=5000)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, UnknownTenant, VaultError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SyncError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ArgumentError) as exc:
        print(f"error: {db.unusable_database(settings.database_url(), exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
