"""`b123 demo`: the whole story on the embedded defaults, against the project's emulators.

Where production has the Dagster daemon evaluate the sensors every few seconds, the demo evaluates
them once itself and runs what they ask for, so it needs nothing running in the background. After
the e-conomic story, a tenant of each other system is updated beside it, and the connection doctor
examines an on-premise tenant whose accounting system's licence has expired.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from contextlib import suppress
from pathlib import Path

import certifi

import sqlalchemy as sa
from dagster import build_sensor_context

from b123_pipelines import settings
from b123_pipelines import tables as t
from b123_pipelines.assets import TRIGGER_TAG, USER_TAG
from b123_pipelines.db import engine_for
from b123_pipelines.errors import system_label
from b123_pipelines.resources import Warehouse
from b123_pipelines.runner import Outcome, local_instance, run_sync
from b123_pipelines.tenants import (
    UnknownTenant,
    add_role,
    add_tenant,
    add_user,
    get_tenant,
    record_login,
    remove_tenant,
    request_refresh,
)
from b123_pipelines.vault import Vault, ensure_local_key

TENANT, USER = "demo", "anna@demo.dk"
ONPREM_KEY = "demo-dqs-shared-key-0123456789"


def run_demo(entries: int = 5000) -> int:
    try:  # a test double, installed beside the package for development, never shipped with it
        from b123_emulators.economic import EconomicEmulator
    except ModuleNotFoundError as missing:
        if missing.name != "b123_emulators":
            raise
        print("the demo needs the emulators: pip install -e ./emulators (make demo does this)",
              file=sys.stderr)
        return 2
    ensure_local_key()
    engine = engine_for(settings.database_url())
    instance = local_instance()
    print(f"Warehouse: {engine.url.render_as_string(hide_password=True)}")
    print(f"Dagster instance: {instance.root_directory} (see it with 'make ui')\n")
    with EconomicEmulator(entries=entries, seed=2026, app_secret_token="demo-app", grant_token="demo-grant") as emu:
        _register(engine, emu)
        cursors: dict[str, str | None] = {}  # each sensor's cursor, as the daemon would keep it
        print(f"1. {USER} logs in for the first time today (auto-refresh on, role may fetch figures);")
        print(f"   the first-login sensor starts an update of '{TENANT}' from e-conomic at {emu.url}")
        record_login(engine, USER)
        first = _serve(instance, cursors, "first_login_updates")
        if first is None or not first.ok:
            return 1
        record_login(engine, USER)
        again = _serve(instance, cursors, "first_login_updates")
        print(f"   {USER} logs in again: {'another update?!' if again else 'no second update today'}\n")

        booked = emu.book_entries(24)
        account = next(a for a in emu.accounts() if a["accountType"] == "profitAndLoss")
        emu.rename_account(account["accountNumber"], f"{account['name']} (omdøbt)")
        emu.add_draft(2)
        print(f"2. In e-conomic: {len(booked)} entries booked, account {account['accountNumber']} renamed, "
              "2 lines put in the draft journal (kassekladde)")
        print(f"   {USER} clicks 'Update accounting figures'; the refresh-request sensor serves it")
        emu.clear_requests()
        request = request_refresh(engine, TENANT, USER)
        second = _serve(instance, cursors, "refresh_requests")
        if second is None:
            return 1
        with engine.connect() as conn:
            state = conn.execute(sa.select(t.sync_requests.c.state).where(
                t.sync_requests.c.request_id == request)).scalar()
        print(f"   Request {request}: {state}")
        pages = [r for r in emu.requests if r.path.startswith("/accounting-years/") and r.path.endswith("/entries")
                 and r.query.get("pagesize") != "1"]
        print(f"   Only new entries were asked for: {', '.join(sorted({r.query.get('filter', '') for r in pages}))}\n")
        _print_changes(engine, second.run_id, {str(d["voucher"]["voucherNumber"]) for d in emu.draft_entries()})
        if not second.ok:
            return 1
    return _other_systems(engine)


def _other_systems(engine) -> int:
    """One tenant of every other system, over HTTPS against its emulator; then the doctor."""
    from b123_emulators.business_central import BusinessCentralEmulator
    from b123_emulators.navision import NavisionEmulator
    from b123_emulators.onprem import Books, OnPremAgent
    from b123_emulators.uniconta import UnicontaEmulator

    from b123_pipelines.doctor import DOCTOR_HTTP, examine
    from b123_pipelines.tenants import open_connector

    home = settings.b123_home() / "demo"
    home.mkdir(parents=True, exist_ok=True)
    (home / "c5.db").unlink(missing_ok=True)  # a fresh accounting file each demo
    books = Books.create(home / "c5.db", entries=600)
    vault = Vault.from_environment()
    print("\n4. A tenant of each other accounting system, updated beside the e-conomic one:")
    with NavisionEmulator(entries=1200) as nav, BusinessCentralEmulator(entries=1200) as bc, \
            UnicontaEmulator(entries=1200) as uniconta, OnPremAgent(books.path, ONPREM_KEY) as agent:
        _trust(home, [nav.ca_file, bc.ca_file, uniconta.ca_file, agent.trust_file])
        tenants = [("demo-nav", "navision_online", "Nord Handel A/S", nav.connection()),
                   ("demo-bc", "business_central", "CRONUS Danmark A/S", bc.connection()),
                   ("demo-uniconta", "uniconta", "Syd Service ApS", uniconta.connection()),
                   ("demo-onprem", "onprem", "Kælder A/S (C5)", {"host": "127.0.0.1", "port": agent.port,
                                                                  "shared_key": ONPREM_KEY})]
        ok = True
        for tenant_id, system, name, connection in tenants:
            with suppress(UnknownTenant):
                remove_tenant(engine, tenant_id)
            add_tenant(engine, vault, tenant_id, system, name, connection)
            outcome = run_sync(tenant_id, echo=None)
            ok &= outcome.ok
            print(f"   {system_label(system):34} {tenant_id:14} => {outcome.message}")
        books.set_licence(dt.date.today() - dt.timedelta(days=3))
        print("\n5. The on-premise accounting system's licence expired three days ago; the connection doctor")
        print("   ('b123 doctor demo-onprem') examines the tenant:")
        tenant = get_tenant(engine, "demo-onprem")
        report = examine(engine, tenant, lambda e, tn: open_connector(e, vault, tn, DOCTOR_HTTP))
        print("\n".join(f"   {line}" for line in report.lines()))
        failed = run_sync("demo-onprem", echo=None)
        print(f"   The update itself now fails, saying so:\n   => {failed.message}")
    return 0 if ok and not failed.ok else 1


def _trust(home, certificates: list[str]) -> None:
    """The emulators' self-signed certificates, trusted the standard way (REQUESTS_CA_BUNDLE) beside
    the machine's own; nothing turns certificate checks off."""
    bundle = home / "trusted.pem"
    own = os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()
    bundle.write_text("".join(Path(f).read_text() for f in [own, *certificates]))
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)


def _register(engine, emu) -> None:
    try:
        remove_tenant(engine, TENANT)
    except UnknownTenant:
        pass
    add_tenant(engine, Vault.from_environment(), TENANT, "economic", "Demo ApS",
               {"base_url": emu.url, "app_secret_token": "demo-app", "grant_token": "demo-grant"})
    add_role(engine, "controller", can_fetch_figures=True)
    add_user(engine, USER, TENANT, "controller", auto_refresh=True)


def _serve(instance, cursors: dict, sensor_name: str) -> Outcome | None:
    """One evaluation of the sensor, as the daemon would do it, and the update it asks for."""
    from b123_pipelines.definitions import build_definitions

    context = build_sensor_context(instance=instance, cursor=cursors.get(sensor_name),
                                   resources={"warehouse": Warehouse(database_url=settings.database_url())})
    result = build_definitions().resolve_sensor_def(sensor_name)(context)
    cursors[sensor_name] = getattr(result, "cursor", None) or cursors.get(sensor_name)
    outcome = None
    for request in getattr(result, "run_requests", None) or []:
        outcome = run_sync(request.partition_key, trigger=request.tags[TRIGGER_TAG],
                           user_id=request.tags[USER_TAG], instance=instance)
        print(f"   => {outcome.message}")
    return outcome


def _print_changes(engine, run_id: str, draft_vouchers: set[str]) -> None:
    with engine.connect() as conn:
        changes = conn.execute(sa.select(t.account_changes).where(t.account_changes.c.run_id == run_id)).mappings().all()
        drafts = conn.execute(sa.select(sa.func.count()).select_from(t.transactions).where(
            t.transactions.c.tenant_id == TENANT, t.transactions.c.voucher.in_(draft_vouchers))).scalar()
    print("3. Account changes for budget123's account-editing page:")
    for c in changes:
        old = f" (was '{c['old_name']}')" if c["old_name"] else ""
        print(f"   {c['change']:8} {c['account_number']:>6}  {c['name']}{old}")
    print(f"\nDraft journal lines in e-conomic: {len(draft_vouchers)} vouchers; loaded as figures: {drafts} "
          "(the draft_exclusion check proves it on every update)")
    print("Next: 'make ui' shows the runs, lineage and checks; '.venv/bin/b123 status demo' the last update.")
