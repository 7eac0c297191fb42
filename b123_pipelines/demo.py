"""`b123 demo`: the whole story on the embedded defaults, against the e-conomic emulator."""

from __future__ import annotations

import sqlalchemy as sa

from b123_pipelines import settings
from b123_pipelines import tables as t
from b123_pipelines.db import engine_for
from b123_pipelines.emulators.economic import EconomicEmulator
from b123_pipelines.runner import local_instance, run_sync
from b123_pipelines.tenants import UnknownTenant, add_tenant, remove_tenant
from b123_pipelines.vault import Vault, ensure_local_key

TENANT = "demo"


def run_demo(entries: int = 5000) -> int:
    ensure_local_key()
    engine = engine_for(settings.database_url())
    print(f"Warehouse: {engine.url.render_as_string(hide_password=True)}")
    print(f"Dagster instance: {local_instance().root_directory} (see it with 'make ui')\n")
    with EconomicEmulator(entries=entries, seed=2026, app_secret_token="demo-app", grant_token="demo-grant") as emu:
        _register(engine, emu)
        print(f"1. First update of '{TENANT}' from the e-conomic emulator at {emu.url}")
        first = run_sync(TENANT)
        print(f"   => {first.message}\n")
        if not first.ok:
            return 1

        booked = emu.book_entries(24)
        account = next(a for a in emu.accounts() if a["accountType"] == "profitAndLoss")
        emu.rename_account(account["accountNumber"], f"{account['name']} (omdøbt)")
        emu.add_draft(2)
        print(f"2. In e-conomic: {len(booked)} entries booked, account {account['accountNumber']} renamed, "
              "2 lines put in the draft journal (kassekladde)")
        emu.clear_requests()
        second = run_sync(TENANT)
        print(f"   => {second.message}")
        pages = [r for r in emu.requests if r.path.startswith("/accounting-years/") and r.path.endswith("/entries")
                 and r.query.get("pagesize") != "1"]
        print(f"   Only new entries were asked for: {', '.join(sorted({r.query.get('filter', '') for r in pages}))}\n")
        _print_changes(engine, second.run_id, {str(d["voucher"]["voucherNumber"]) for d in emu.draft_entries()})
        return 0 if second.ok else 1


def _register(engine, emu) -> None:
    try:
        remove_tenant(engine, TENANT)
    except UnknownTenant:
        pass
    add_tenant(engine, Vault.from_environment(), TENANT, "economic", "Demo ApS",
               {"base_url": emu.url, "app_secret_token": "demo-app", "grant_token": "demo-grant"})


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
