"""Sizing production from the measured per-tenant costs (issue 12, part 4): run workers, API budgets,
warehouse size and load, and where one PostgreSQL stops being enough.

`measure(workdir)` adds what the other cases do not record: the API calls of a first sync and of a
first-login update of a small tenant, and the warehouse's bytes per posted entry (transactions with
their indexes, budget_actuals) after a 100,000-entry sync on PostgreSQL. `section(r)` turns those
and the run's other figures into the "Sizing production" section of RESULTS.md; every number in it
is computed from the run's results and the assumptions named at its top.

    python -m benchmarks.sizing    # measures, merges into RESULTS.json, writes RESULTS.md again
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent

# What production looks like (issue 12): the assumptions every figure below rests on.
TENANTS = 10_000
WAVE = 5_000  # first logins in the morning wave...
WAVE_MINUTES = 15  # ...within a quarter of an hour
NIGHT_HOURS = 6  # the window for the nightly full re-syncs
ENTRIES_PER_TENANT = 50_000  # average posted entries a tenant holds (a few years of a small business)
NEW_PER_DAY = 200  # entries a tenant posts on a working day: what a first-login update fetches
SMALL = 5_000  # entries of the tenant whose calls are counted
LATENCY = 0.25  # seconds a real API takes to answer a page (run.LATENCY)


def measure(workdir: Path) -> dict:
    """API calls per update (first sync, first-login update) and warehouse bytes per entry."""
    from benchmarks.emulator import EmulatorProcess
    from benchmarks.run import Place, child

    out: dict = {}
    with EmulatorProcess(entries=SMALL) as emu:
        emu.warm()
        place = Place("sqlite", workdir)
        try:
            child("sync", env=place.env, tenants=["calls"], connection=emu.connection())
            first = _calls(place.url)
            emu.book(NEW_PER_DAY)
            emu.warm()
            child("sync", env=place.env, tenants=["calls"], connection=emu.connection(), add=False)
            out["calls_first_sync"], out["calls_update"] = first, _calls(place.url) - first
        finally:
            place.drop()
    with EmulatorProcess(entries=100_000) as emu:
        emu.warm()
        place = Place("postgres", workdir)
        try:
            child("sync", env=place.env, tenants=["bytes"], connection=emu.connection())
            out.update(_bytes_per_entry(place.url))
        finally:
            place.drop()
    out["small_entries"] = SMALL
    return out


def _calls(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        calls = conn.execute(sa.text("SELECT coalesce(sum(api_calls), 0) FROM sync_runs")).scalar()
    engine.dispose()
    return int(calls)


def _bytes_per_entry(url: str) -> dict:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        entries = conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar()
        size = {table: conn.execute(sa.text(f"SELECT pg_total_relation_size('{table}')")).scalar()
                for table in ("transactions", "budget_actuals")}
    engine.dispose()
    return {"bytes_per_entry": size["transactions"] / entries, "actuals_bytes_per_entry": size["budget_actuals"] / entries}


def section(r: dict) -> list[str]:
    s, b = r.get("sizing"), r.get("backfill")
    full, far, far_inc = r.get("pg_full"), r.get("latency_full"), r.get("latency_incremental")
    if not (s and b and full and far and far_inc and r.get("sink_floor")):
        return []
    n, wave = r["sizes"]["entries"], b["wave"]
    at_once = b["updates_at_once"] // b["runs_at_once"]  # one run's thread pool
    # A first-login update waits on the API (a round trip at a time) more than it works: a run
    # worker overlaps `at_once` of them. Its CPU is at most a 5,000-entry first sync's, called
    # directly (the backfill case), which fetches and stores far more.
    update_wait = far_inc["seconds"]
    update_cpu = b["direct_sequential_per_tenant"]
    per_worker = min(at_once / update_wait, 1 / update_cpu)
    wave_workers = math.ceil(WAVE / (per_worker * WAVE_MINUTES * 60))
    # Nightly full re-syncs: an update's fixed round trips (as the first-login update's) plus the
    # entries at the full sync's pace at real latency; a worker runs `at_once` of them, bounded by
    # its CPU (the full sync's CPU per entry).
    sync_seconds = update_wait + far["seconds"] / far["rows"] * ENTRIES_PER_TENANT
    cpu_per_entry = full["cpu_seconds"] / n  # the process's, imports included
    night_cpu_hours = TENANTS * ENTRIES_PER_TENANT * cpu_per_entry / 3600
    night_worker_hours = max(TENANTS * sync_seconds / at_once, night_cpu_hours * 3600) / 3600
    night_workers = math.ceil(night_worker_hours / NIGHT_HOURS)
    pages = math.ceil(ENTRIES_PER_TENANT / 1000)
    fixed = s["calls_first_sync"] - math.ceil(SMALL / 1000)  # calls of a first sync beyond its pages
    rows = TENANTS * ENTRIES_PER_TENANT
    gib = rows * (s["bytes_per_entry"] + s["actuals_bytes_per_entry"]) / 2**30
    copy_rate = r["sink_floor"]["rows"] / r["sink_floor"]["seconds"]
    # One PostgreSQL is enough while a night's re-write of every entry fits the window on one COPY
    # stream (a server with more cores runs several side by side: a margin, not counted).
    one_server_entries = copy_rate * NIGHT_HOURS * 3600
    one_server_gib = one_server_entries * (s["bytes_per_entry"] + s["actuals_bytes_per_entry"]) / 2**30
    lines = [
        "", "## Sizing production", "",
        f"Assumptions: {TENANTS:,} tenants holding {ENTRIES_PER_TENANT:,} posted entries each on average; "
        f"{WAVE:,} first logins within {WAVE_MINUTES} minutes, each update fetching a working day's "
        f"{NEW_PER_DAY} new entries; every tenant re-synced in full each night within {NIGHT_HOURS} hours; "
        f"a real API answering a page in {LATENCY * 1000:.0f} ms. Every other figure is this run's.", "",
        "| | figure | from |", "| --- | ---: | --- |",
        f"| a first-login update at {LATENCY * 1000:.0f} ms a request (whole update, checks included) | "
        f"{update_wait:.1f} s | latency case, incremental |",
        f"| updates one run worker overlaps (a run's thread pool) | {at_once} | backfill case |",
        f"| first-login updates one run worker finishes | {per_worker * 60:.0f} a minute | the two above |",
        f"| **run workers for the morning wave** ({WAVE:,} in {WAVE_MINUTES} min) | **{wave_workers}** | "
        f"vs {wave['workers_within']} for 5,000-entry first syncs on loopback (backfill case) |",
        f"| a full re-sync of a {ENTRIES_PER_TENANT:,}-entry tenant at {LATENCY * 1000:.0f} ms a request | "
        f"{sync_seconds:.1f} s | latency case, full sync of {far['rows']:,} |",
        f"| CPU per posted entry in a full sync (the process's, imports included) | {cpu_per_entry * 1e6:.0f} µs | "
        f"full sync of {n:,} |",
        f"| **run workers for the nightly re-syncs** (one core each, {NIGHT_HOURS} h) | **{night_workers}** | "
        f"{night_worker_hours:.0f} worker-hours |",
        f"| API calls: a first sync of {SMALL:,} entries / a first-login update | {s['calls_first_sync']} / "
        f"{s['calls_update']} | sizing case |",
        f"| e-conomic calls a tenant spends a day: a full re-sync ({pages:,} pages and the "
        f"{fixed} other calls a first sync makes) and a first-login update | ≈ {pages + fixed + s['calls_update']:,} "
        f"of {int(50_000 * 0.8):,} | budget: 50,000 a day, budget123 spends at most 80 % |",
        f"| warehouse bytes per posted entry: transactions with indexes / budget_actuals | "
        f"{s['bytes_per_entry']:.0f} / {s['actuals_bytes_per_entry']:.0f} B | 100,000-entry sync on PostgreSQL |",
        f"| **warehouse size**: {rows / 1e6:,.0f} M entries | **{gib:,.0f} GiB** | the two above |",
    ]
    lines += [
        f"| the nightly re-write of every entry at one COPY stream's rate ({copy_rate:,.0f} rows/s) | "
        f"{rows / copy_rate / 3600:.1f} h of one PostgreSQL backend | sink floor |",
        f"| entries one PostgreSQL re-writes in the {NIGHT_HOURS} h night on one COPY stream | "
        f"{one_server_entries / 1e9:.1f} B ({one_server_gib:,.0f} GiB, "
        f"{one_server_entries / ENTRIES_PER_TENANT:,.0f} tenants of this size) | sink floor |",
        "",
        "Reading it: the morning wave is the peak, and it is latency-bound, not CPU-bound: a worker "
        "spends most of an update waiting on round trips, so more updates per run worker (a larger "
        "thread pool) cut the pods needed, and each tenant's API budget is its own (e-conomic, Uniconta "
        "and Business Central count per agreement, user or environment), so budgets bind per tenant, "
        "not across the wave. The nightly full re-syncs are a light, steady load: each tenant's "
        "re-sync is bound by its API's calls at once (8 for e-conomic), and many tenants run side by "
        "side. Uniconta's 5,000 calls a day (4,000 for budget123) allow a nightly full re-sync of up "
        "to about 3.5 M entries; larger Uniconta tenants need incremental-only nights.",
        "",
        f"Where one PostgreSQL stops being enough: the warehouse above fits one server; what outgrows it "
        f"first is the nightly re-write, at about {one_server_entries / 1e9:.0f} B entries on one COPY "
        "stream (more streams on more cores push that further, until the server's disks and WAL are "
        "the limit), or a size past what one server's disks and backups handle comfortably. Every "
        "warehouse table's key starts with `tenant_id`, so it distributes by tenant on Citus "
        "(`create_distributed_table(table, 'tenant_id')`, all colocated). What that needs: `tenants` "
        "distributed on `tenant_id` too (the warehouse's foreign keys reference it, and Citus requires "
        "foreign keys between distributed tables to include the distribution column, which ours do); "
        "the page writes work as they are (COPY into a distributed table is routed per shard; `ON "
        "CONFLICT (tenant_id, entry_id)` contains the distribution column; the staging table's `INSERT "
        "... SELECT` from a coordinator temp table goes through the coordinator, acceptable for the "
        "rare conflicting page); the lease and every per-tenant query filter on `tenant_id`, so they "
        "route to one shard; the `sync_log` and change tables' serial ids come from coordinator "
        "sequences; cross-tenant reads (doctor, retention, sensors' scans of `logins`) become "
        "multi-shard queries, fine at their rates; Alembic revisions run on the coordinator and Citus "
        "propagates DDL.",
    ]
    return lines


def main() -> None:
    from benchmarks.run import main as run_main

    results = HERE / "RESULTS.json"
    saved = json.loads(results.read_text())
    with tempfile.TemporaryDirectory(prefix="b123-sizing-") as workdir:
        saved["results"]["sizing"] = measure(Path(workdir))
    results.write_text(json.dumps(saved, indent=1))
    run_main(["--report-only"])


if __name__ == "__main__":
    main()
