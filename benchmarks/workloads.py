"""What is measured, one workload per process: `python -m benchmarks.workloads NAME JSON-ARGS`.

Each workload runs in a fresh interpreter started by run.py, so its peak RSS (ru_maxrss of this
process: the kernel's high-water mark, not a sample) is its own and the emulator's is not in it.
It prints one line `RESULT {json}` for run.py to read.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import sys
import tempfile
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _set_env(env: dict) -> None:
    os.environ.update(env)


# ---------------------------------------------------------------- the sync, as production drives it
def sync(env: dict, tenants: list[str], connection: dict, add: bool = True, full: bool = False,
         one_instance: bool = False) -> dict:
    """Each tenant through the Dagster job (runner.run_sync), one after the other.

    one_instance: open the Dagster instance once and run every tenant on it, as a backfill run by
    one process would (run_sync alone opens it per call, as `b123 sync` does)."""
    _set_env(env)
    import sqlalchemy as sa

    from b123_pipelines import settings
    from b123_pipelines import tables as t
    from b123_pipelines.db import engine_for
    from b123_pipelines.runner import local_instance, run_sync
    from b123_pipelines.tenants import add_tenant
    from b123_pipelines.vault import Vault

    engine = engine_for(settings.database_url())
    if add:
        vault = Vault(env["B123_SECRET_KEY"])
        for tenant in tenants:
            add_tenant(engine, vault, tenant, "economic", tenant, connection)
    baseline = peak_rss_mb()
    per_tenant, rows = [], 0
    started = time.perf_counter()
    instance = local_instance() if one_instance else None
    for tenant in tenants:
        t0 = time.perf_counter()
        outcome = run_sync(tenant, full=full, echo=None, instance=instance)
        per_tenant.append(time.perf_counter() - t0)
        if not outcome.ok:
            raise SystemExit(f"sync of {tenant} failed: {outcome.message}")
        with engine.connect() as conn:
            rows += conn.execute(sa.select(t.sync_runs.c.transactions_fetched)
                                 .where(t.sync_runs.c.run_id == outcome.run_id)).scalar()
            phases = _phase_seconds(conn, outcome.run_id)
    seconds = time.perf_counter() - started
    return dict(seconds=seconds, rows=rows, per_tenant=per_tenant, peak_rss_mb=peak_rss_mb(),
                baseline_rss_mb=baseline, phases=phases)


def _phase_seconds(conn, run_id: str) -> dict:
    """The last update's phases by its live log: each phase from its first line to its last (for
    transactions: the new entries fetched and stored, page by page; the checks write no lines)."""
    import sqlalchemy as sa

    from b123_pipelines import tables as t

    log = t.sync_log.c
    spans = conn.execute(sa.select(log.phase, sa.func.min(log.logged_at), sa.func.max(log.logged_at)).where(
        log.run_id == run_id).group_by(log.phase)).all()
    return {phase: (last - first).total_seconds() for phase, first, last in spans}


def direct(env: dict, tenants: list[str], connection: dict) -> dict:
    """The same phases and checks as the Dagster job, called as plain functions (no Dagster)."""
    _set_env(env)
    from b123_pipelines import settings
    from b123_pipelines.db import engine_for
    from b123_pipelines.tenants import add_tenant
    from b123_pipelines.vault import Vault

    engine = engine_for(settings.database_url())
    vault = Vault(env["B123_SECRET_KEY"])
    for tenant in tenants:
        add_tenant(engine, vault, tenant, "economic", tenant, connection)
    per_tenant = []
    started = time.perf_counter()
    for tenant_id in tenants:
        t0 = time.perf_counter()
        direct_update(engine, vault, tenant_id)
        per_tenant.append(time.perf_counter() - t0)
    return dict(seconds=time.perf_counter() - started, per_tenant=per_tenant, peak_rss_mb=peak_rss_mb())


def direct_update(engine, vault, tenant_id: str) -> None:
    """One tenant's update as plain function calls: its row, the four phases, the four checks."""
    import uuid

    from b123_pipelines import checks, status
    from b123_pipelines import sync as s
    from b123_pipelines.tenants import get_tenant, open_connector

    tenant = get_tenant(engine, tenant_id)
    run_id = str(uuid.uuid4())
    status.open_run(engine, run_id, tenant_id, tenant.system, "backfill", None, False)
    log = status.LiveLog(engine, run_id, tenant_id, locale=tenant.locale, echo=lambda _: None)
    connector = open_connector(engine, vault, tenant)
    try:
        s.sync_accounts(engine, connector, run_id, log)
        s.sync_dimensions(engine, connector, run_id, log)
        load = s.sync_transactions(engine, connector, run_id, log)
        status.add_counts(engine, run_id, transactions_fetched=load.fetched, transactions_new=load.new)
        results = [checks.draft_exclusion(engine, connector),
                   checks.row_counts(engine, connector, run_id, load.fetched, s.load_cursor(engine, tenant_id))]
        months = s.rebuild_actuals(engine, tenant_id, log)
        results += [checks.actuals_match_transactions(engine, tenant_id, months),
                    checks.reconciliation(engine, connector)]
        assert all(r.passed for r in results), results
        status.close_run(engine, run_id, "succeeded", tenant.locale)
    finally:
        connector.close()


# ---------------------------------------------------------------- floors
def _connector(connection: dict):
    from b123_pipelines.connectors.economic import EconomicConnector, EconomicSettings

    return EconomicConnector(tenant_id="bench", settings=EconomicSettings.model_validate(connection))


def source_floor(connection: dict) -> dict:
    """Paging the emulator and parsing its JSON into entries with the sync's own connector; no storing."""
    connector = _connector(connection)
    rows = pages = 0
    started = time.perf_counter()
    for page in connector.entry_pages(None):
        rows += len(page.entries)
        pages += 1
    seconds = time.perf_counter() - started
    connector.close()
    return dict(seconds=seconds, rows=rows, pages=pages, peak_rss_mb=peak_rss_mb())


COLUMNS = ("tenant_id", "entry_id", "account_number", "posting_date", "period", "amount", "currency",
           "amount_in_currency", "voucher", "text", "entry_type", "dimension_1", "dimension_2",
           "dimension_3", "loaded_run_id")


def sink_floor(connection: dict, database_url: str) -> dict:
    """One PostgreSQL COPY of the same rows into the same (empty, indexed) transactions table.

    The rows are fetched from the emulator and written to a CSV file first, untimed."""
    import sqlalchemy as sa

    from b123_pipelines.tables import transactions, warehouse_metadata

    connector = _connector(connection)
    rows = 0
    with tempfile.NamedTemporaryFile("w+", suffix=".csv", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for page in connector.entry_pages(None):
            for e in page.entries:
                writer.writerow(("bench", e.entry_id, e.account_number, e.posting_date,
                                 e.posting_date.replace(day=1), e.amount, e.currency,
                                 e.amount_in_currency, e.voucher, e.text, e.entry_type, e.dimension_1,
                                 e.dimension_2, e.dimension_3, "run"))
                rows += 1
        connector.close()
        f.flush()
        engine = sa.create_engine(database_url)
        warehouse_metadata.create_all(engine, tables=[transactions])
        raw = engine.raw_connection()
        try:
            f.seek(0)
            started = time.perf_counter()
            with raw.cursor() as cur:
                cur.copy_expert(f"COPY transactions ({','.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", f)
            raw.commit()
            seconds = time.perf_counter() - started
        finally:
            raw.close()
            engine.dispose()
    return dict(seconds=seconds, rows=rows, peak_rss_mb=peak_rss_mb())


# ---------------------------------------------------------------- the peer
def dlt_load(connection: dict, credentials: str, dataset: str, workdir: str) -> dict:
    """dlt, as a data team would write it: a resource paging the API with requests, merge on the id."""
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ["DLT_DATA_DIR"] = workdir
    import dlt
    import requests

    base = connection["base_url"]
    headers = {"X-AppSecretToken": connection["app_secret_token"],
               "X-AgreementGrantToken": connection["grant_token"]}

    @dlt.resource(name="entries", primary_key="entryNumber", write_disposition="merge")
    def entries():
        http = requests.Session()
        http.headers.update(headers)
        years = http.get(f"{base}/accounting-years", params={"pagesize": 1000}).json()["collection"]
        for year in years:
            url = (f"{base}/accounting-years/{year['year'].replace('/', '_6_')}/entries"
                   "?pagesize=1000&sort=entryNumber")
            while url:
                response = http.get(url)
                response.raise_for_status()
                body = response.json()
                yield body["collection"]
                url = body.get("pagination", {}).get("nextPage")

    pipeline = dlt.pipeline(pipeline_name=f"bench_{dataset}", pipelines_dir=workdir,
                            destination=dlt.destinations.postgres(credentials=credentials),
                            dataset_name=dataset)
    started = time.perf_counter()
    pipeline.extract(entries())
    extracted = time.perf_counter()
    pipeline.normalize()
    normalized = time.perf_counter()
    pipeline.load()
    finished = time.perf_counter()
    with pipeline.sql_client() as client:
        rows = client.execute_sql("SELECT count(*) FROM entries")[0][0]
    return dict(seconds=finished - started, rows=rows, extract=extracted - started,
                normalize=normalized - extracted, load_step=finished - normalized, peak_rss_mb=peak_rss_mb())


def plain_client(connection: dict) -> dict:
    """The floor a sync is held to: requests and json, following nextPage one page after another
    through every year's entries, and nothing else (no Decimals, no records, no storing)."""
    import json as plain_json

    import requests

    headers = {"X-AppSecretToken": connection["app_secret_token"],
               "X-AgreementGrantToken": connection["grant_token"]}
    session, base = requests.Session(), connection["base_url"]
    started = time.perf_counter()
    years = [y["year"] for y in session.get(f"{base}/accounting-years", headers=headers).json()["collection"]]
    rows = pages = 0
    for year in years:
        url = f"{base}/accounting-years/{year.replace('/', '_6_')}/entries?pagesize=1000"
        while url:
            body = plain_json.loads(session.get(url, headers=headers).content)
            rows, pages, url = rows + len(body["collection"]), pages + 1, body["pagination"].get("nextPage")
    return dict(seconds=time.perf_counter() - started, rows=rows, pages=pages, peak_rss_mb=peak_rss_mb())


WORKLOADS = dict(sync=sync, direct=direct, source_floor=source_floor, sink_floor=sink_floor, dlt=dlt_load,
                 plain_client=plain_client)

def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    result = WORKLOADS[name](**args)
    result["cpu_seconds"] = cpu_seconds()  # the whole process, imports and setup included
    print("RESULT " + json.dumps(result), flush=True)
