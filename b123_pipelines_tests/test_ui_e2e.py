"""The Dagster UI as the data team uses it, end to end: a real dagster-webserver and dagster-daemon on
loopback, Dagster's storage on PostgreSQL (the production dagster.yaml), the warehouse on
PostgreSQL, four e-conomic tenants on the emulator; then the pages in headless Chromium.

Through GraphQL (what the UI itself calls): every registered system's graph and checks; partition
backfills launched as the UI's Materialize launches them (`launchPartitionBackfill`), each one run
over its tenants (ranged.py), in process (one step each), each tenant's update a `sync_runs` row of
its own and its own partition's materializations with their metadata, a failed tenant's message and
partition, and the lease: two backfills of a busy tenant both wait for it and then take turns, not
fail, while the other tenants are updated meanwhile. Through Chromium: the lineage
page of the `economic` group and the `economic/transactions` partitions tab of a tenant, asserted
from their DOM, with screenshots kept in test-artifacts/ui/ (ignored by git).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from b123_emulators.economic import EconomicEmulator
from b123_pipelines import checks as data_checks
from b123_pipelines import guard, ranged
from b123_pipelines import tables as t
from b123_pipelines.assets import PHASES, job_name, partitions_name, pool_name
from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.db import engine_for
from b123_pipelines.tenants import add_tenant
from b123_pipelines.vault import Vault
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.test_daemon_e2e import (  # noqa: F401 - the fixtures are used by name
    ROOT,
    Stack,
    _partitions,
    dagster_database,
    production_stack_env,
    warehouse_url,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
A, B, C, REVOKED = "ui-a", "ui-b", "ui-c", "ui-revoked"
ECONOMIC_ASSETS = [{"path": ["economic", phase]} for phase in PHASES]


# ---------------------------------------------------------------- the browser
def _ensure_chromium() -> str | None:
    """Debian's chromium, installed with apt-get where it is missing and we are root (never a
    downloaded browser). Returns why it cannot be had, or None."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "chromium is not installed and this user cannot install it (apt-get as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    attempt = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if attempt.returncode != 0:  # a stale package list: update it once and try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        attempt = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if attempt.returncode != 0 or not os.path.exists(CHROMIUM):
        return "apt-get could not install chromium: " + " ".join(attempt.stderr.strip().splitlines()[-1:])
    return None


@pytest.fixture(scope="module")
def chromium() -> str | None:
    """Installed before the stack starts, so the install does not count against its waits."""
    return _ensure_chromium()


def _browse(url: str, profile: Path, screenshot: Path) -> str:
    """The page's DOM after its scripts ran, and a screenshot; Chromium and all its processes end."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1600,1000",
            f"--screenshot={screenshot}", "--dump-dom", url]
    browser = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        dom, _ = browser.communicate(timeout=120)
    finally:
        _end_group(browser)
    assert browser.returncode == 0, f"chromium exited with {browser.returncode} on {url}"
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, f"no screenshot of {url}"
    print(f"screenshot of {url}: {screenshot}")
    return dom.decode("utf-8", errors="replace")


def _end_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    process.wait(timeout=10)


def _page_text(url: str, profile: Path, screenshot: Path, ready: str) -> str:
    """The page's visible text once it shows `ready` (a regular expression): a page still loading
    its data on a busy machine is asked again, up to three times, and returned as it is then."""
    for _ in range(3):
        text = _text(_browse(url, profile, screenshot))
        if re.search(ready, text):
            break
    return text


def _text(dom: str) -> str:
    """The page's visible text, one space between words."""
    import html

    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def _processes_with(marker: str) -> list[str]:
    """Processes whose environment or command line holds `marker`: what the stack or the browser left."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # already dead, waiting for its parent to read its status
            blobs = [Path(f"/proc/{pid}/{name}").read_bytes() for name in ("environ", "cmdline")]
        except (OSError, IndexError):
            continue
        if any(marker.encode() in blob for blob in blobs):
            command = blobs[1].replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {command[:160]}")
    return found


# ---------------------------------------------------------------- GraphQL, as the UI calls it
def _gql(stack: Stack, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(stack.url("/graphql"), method="POST",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


ASSET_GRAPH = """{ assetNodes { assetKey { path } groupName dependencyKeys { path } jobNames pools
  partitionDefinition { name type } assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }"""

LAUNCH_BACKFILL = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""

RUN = """query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
  status jobName tags { key value } stepStats { stepKey status } } } }"""

RUN_EVENTS = """query ($runId: ID!) { logsForRun(runId: $runId, limit: 1000) { __typename ... on EventConnection {
  events { __typename ... on MessageEvent { message stepKey }
           ... on ExecutionStepFailureEvent { error { message } failureMetadata { description } } } } } }"""

MATERIALIZATIONS = """query ($path: [String!]!, $partitions: [String!]) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { assetMaterializations(partitions: $partitions) { partition runId metadataEntries {
    label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } }
  assetPartitionStatuses { __typename ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } } } } }"""

BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status } } }"""

BACKFILL_RUNS = """query ($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
  runId tags { key value } } } } }"""

POOLS = """{ instance { concurrencyLimits { concurrencyKey slotCount } } }"""


def _backfill(stack: Stack, tenants: list[str]) -> str:
    """What the UI's Materialize does for the economic group with some tenants chosen."""
    launched = _gql(stack, LAUNCH_BACKFILL, {"params": {
        "assetSelection": ECONOMIC_ASSETS, "partitionNames": tenants, "title": f"ui test: {', '.join(tenants)}"}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _run(stack: Stack, run_id: str) -> dict | None:
    run = _gql(stack, RUN, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    if run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
        return None
    return {**run, "tags": {tag["key"]: tag["value"] for tag in run["tags"]}}


def _events(stack: Stack, run_id: str) -> list[dict]:
    logs = _gql(stack, RUN_EVENTS, {"runId": run_id})["logsForRun"]
    assert logs["__typename"] == "EventConnection", logs
    return logs["events"]


def _runs_of(stack: Stack, backfills) -> dict[str, dict] | None:
    """Run id → run (tags as a dict) of each backfill's run, once each has exactly one."""
    found = {}
    for backfill in backfills:
        runs = _gql(stack, BACKFILL_RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill}]}})
        results = runs["runsOrError"]["results"]
        if len(results) != 1:
            return None
        found[results[0]["runId"]] = {"tags": {tag["key"]: tag["value"] for tag in results[0]["tags"]}}
    return found


def _said(stack: Stack, run_id: str, text: str) -> bool:
    return any(text in (e.get("message") or "") for e in _events(stack, run_id))


def _metadata(materialization: dict) -> dict:
    return {e["label"]: e.get("intValue", e.get("text")) for e in materialization["metadataEntries"]}


def _sync_runs(engine) -> dict[str, list]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.sync_runs).order_by(t.sync_runs.c.started_at)).mappings().all()
    by_tenant: dict[str, list] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append(row)
    return by_tenant


# ---------------------------------------------------------------- the test
def test_the_ui_shows_lineage_backfills_tenants_and_failures(tmp_path, chromium, dagster_database, warehouse_url):
    started = time.monotonic()
    env, key, dagster_url = production_stack_env(tmp_path, dagster_database, warehouse_url)
    engine = engine_for(warehouse_url)
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)

    with EconomicEmulator(entries=120, seed=9, app_secret_token="app-secret-SENTINEL-1",
                          grant_token="grant-token-SENTINEL-2") as emulator:
        vault = Vault(key)
        for tenant in (A, B, C):
            add_tenant(engine, vault, tenant, "economic", f"Firma {tenant} ApS", economic_connection(emulator))
        revoked_grant = emulator.issue_grant()
        emulator.revoke_grant(revoked_grant)  # the customer's user who granted access lost it
        add_tenant(engine, vault, REVOKED, "economic", "Tilbagekaldt ApS",
                   {**economic_connection(emulator), "grant_token": revoked_grant})
        posted = len(list(emulator.posted_entries()))

        # As `make up`: each system's pool limit, then the daemon and the webserver.
        pools = subprocess.run([sys.executable, "-m", "b123_pipelines.pools"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        assert pools.returncode == 0, pools.stderr
        for system, connector in CONNECTORS.items():
            assert f"{pool_name(system)}: {connector.budget.updates_at_once} update(s) at once" in pools.stdout

        stack = Stack(env, tmp_path)
        try:
            stack.start()
            stack.wait_for("the webserver to answer /server_info", lambda: stack.server_info() == 200)

            # ---- the asset graph: every registered system, its lineage, partitions, pool and checks
            nodes = {tuple(n["assetKey"]["path"]): n for n in _gql(stack, ASSET_GRAPH)["assetNodes"]}
            for system, connector in CONNECTORS.items():
                keys = [(system, phase) for phase in PHASES]
                for i, key in enumerate(keys):
                    node = nodes[key]
                    assert node["groupName"] == system and node["pools"] == [pool_name(system)]
                    assert [tuple(d["path"]) for d in node["dependencyKeys"]] == keys[i - 1:i]
                    assert node["partitionDefinition"] == {"name": partitions_name(system), "type": "DYNAMIC"}
                    assert job_name(system) in node["jobNames"]
                    expected = {spec.name: spec.blocking for spec in data_checks.specs(connector, _asset_keys(system))
                                if tuple(spec.asset_key.path) == key}
                    shown = node["assetChecksOrError"]
                    assert shown["__typename"] == "AssetChecks", shown
                    assert {c["name"]: c["blocking"] for c in shown["checks"]} == expected, (key, shown)
            assert {c["name"] for c in nodes[("economic", "transactions")]["assetChecksOrError"]["checks"]} == {
                "draft_exclusion", "row_counts"}
            pool_slots = {p["concurrencyKey"]: p["slotCount"] for p in _gql(stack, POOLS)["instance"]["concurrencyLimits"]}
            assert pool_slots["economic_api"] == CONNECTORS["economic"].budget.updates_at_once

            # ---- backfills, as the UI's Materialize launches them, once the tenants are partitions. Each
            # is one run over its tenants (BackfillPolicy.multi_run); tenant A is busy meanwhile (held
            # here, as by an update running elsewhere) and is in two of them: both wait for it, not fail.
            stack.wait_for("the tenant_onboarding sensor to make the tenants partitions",
                           lambda: {A, B, C, REVOKED} <= _partitions(dagster_url))
            order = sorted([A, B, C, REVOKED])  # the partitions' order: the onboarding sensor adds them sorted
            with guard.held(engine, A, "ui-test-holder"):
                first = _backfill(stack, [A, B])
                second = _backfill(stack, [A])  # the same tenant again: must wait, then update it
                third = _backfill(stack, [C, REVOKED])
                backfills = (first, second, third)
                launched = stack.wait_for("each backfill's run", lambda: _runs_of(stack, backfills))
                updates = {run_id: ranged.run_tenants(SimpleNamespace(run_id=run_id, tags=run["tags"], run_config={}),
                                                      "economic_update", lambda: order)
                           for run_id, run in launched.items()}
                run_of = {b: next(rid for rid, run in launched.items() if run["tags"]["dagster/backfill"] == b)
                          for b in backfills}
                # One run of two tenants, one of one (its update id is the run's, as always), one of two.
                assert updates[run_of[first]] == {A: ranged.update_id(run_of[first], A),
                                                  B: ranged.update_id(run_of[first], B)}
                assert updates[run_of[second]] == {A: run_of[second]}
                assert set(updates[run_of[third]]) == {C, REVOKED}

                def others_done_while_a_waits():
                    runs = _sync_runs(engine)
                    if A in runs or any(runs.get(x, [{}])[0].get("status") in (None, "running") for x in (B, C, REVOKED)):
                        return False
                    return all(_said(stack, run_of[b], f"[waiting] Tenant '{A}' (e-conomic): another update of this "
                                                       "tenant is running (run ui-test-holder)") for b in (first, second))

                stack.wait_for("B, C and the revoked tenant to be updated while both updates of A wait",
                               others_done_while_a_waits, timeout=240,
                               detail=lambda: f"(sync_runs: {_sync_runs(engine)})")

            def all_closed():
                runs = _sync_runs(engine)
                done = [r for rows in runs.values() for r in rows if r["status"] != "running"]
                return runs if len(done) == 5 else None

            runs = stack.wait_for("the five updates to end", all_closed, timeout=240,
                                  detail=lambda: f"(sync_runs: {_sync_runs(engine)})")
            for tenant in (A, B, C):
                assert [r["status"] for r in runs[tenant]] == ["succeeded"] * (2 if tenant == A else 1), runs[tenant]
            # sync_runs: one row per tenant's update, under its run's update id (ranged.update_id)
            assert {(tenant, r["run_id"]) for tenant, rows in runs.items() for r in rows} == {
                (tenant, update) for by_tenant in updates.values() for tenant, update in by_tenant.items()}
            assert all(r["trigger"] == "backfill" for rows in runs.values() for r in rows)
            assert runs[B][0]["transactions_fetched"] == posted and runs[C][0]["transactions_fetched"] == posted
            assert sorted(r["transactions_fetched"] for r in runs[A]) == [0, posted]
            # One tenant never loads twice at once: A's two updates took turns once it was free; the
            # other tenants were not held up by A.
            a_before, a_after = runs[A]
            assert a_before["finished_at"] <= a_after["started_at"], (a_before, a_after)
            assert max(runs[x][0]["finished_at"] for x in (B, C, REVOKED)) < a_before["started_at"]
            (failed,) = runs[REVOKED]
            assert failed["status"] == "failed" and "no longer accepts budget123's access ID" in failed["message"]
            dagster_run = {update: run_id for run_id, by_tenant in updates.items() for update in by_tenant.values()}
            failed_run = run_of[third]

            # ---- each run is the lean path: one step, in process; only the run with the failed tenant failed
            finished = {run_id: stack.wait_for(f"Dagster to finish run {run_id}", lambda r=run_id: _run(stack, r))
                        for run_id in launched}
            for run_id, run in finished.items():
                assert [s["stepKey"] for s in run["stepStats"]] == ["economic_update"], run
                assert run["tags"]["dagster/backfill"] in backfills
                messages = [e.get("message") or "" for e in _events(stack, run_id)]
                assert any("in process" in m for m in messages), messages
                assert not any("multiprocess" in m for m in messages)
            assert finished[failed_run]["status"] == "FAILURE"
            assert {run["status"] for rid, run in finished.items() if rid != failed_run} == {"SUCCESS"}

            # ---- the failed tenant's message, where the data team looks: the run's step failure
            failures = [e for e in _events(stack, failed_run) if e["__typename"] == "ExecutionStepFailureEvent"]
            assert failures, "no step failure in the failed run's events"
            shown = " ".join((f["failureMetadata"] or {}).get("description") or f["error"]["message"] for f in failures)
            assert f"1 of 2 tenants failed ({REVOKED})" in shown and failed["message"] in shown, shown

            # ---- the materializations carry their metadata; partitions show who is loaded, who failed
            tx = _gql(stack, MATERIALIZATIONS, {"path": ["economic", "transactions"], "partitions": [B]})
            (loaded,) = tx["assetNodeOrError"]["assetMaterializations"]
            assert loaded["partition"] == B and loaded["runId"] == run_of[first] == dagster_run[runs[B][0]["run_id"]]
            meta = _metadata(loaded)
            assert meta["fetched"] == posted and meta["new"] == posted and meta["api_calls"] > 0, meta
            statuses = tx["assetNodeOrError"]["assetPartitionStatuses"]
            assert set(statuses["materializedPartitions"]) == {A, B, C}, statuses
            assert statuses["failedPartitions"] == [REVOKED], statuses
            actuals = _gql(stack, MATERIALIZATIONS, {"path": ["economic", "budget_actuals"], "partitions": [B]})
            (closing,) = actuals["assetNodeOrError"]["assetMaterializations"]
            assert _metadata(closing)["status_message"] == runs[B][0]["message"]
            assert runs[B][0]["message"].startswith(f"Hentede {posted} transaktioner")
            print(f"{time.monotonic() - stack.started:6.1f} s  GraphQL checks done")

            # ---- the pages, in Chromium
            if chromium is not None:
                print(f"browser pages skipped: {chromium}")
            else:
                lineage = _page_text(stack.url("/locations/b123_pipelines/asset-groups/economic/lineage"),
                                     tmp_path / "chromium", ARTIFACTS / "lineage-economic.png",
                                     ready=r"\d / 2 Passed.*\d / 2 Passed")
                assert "economic Asset Group in b123_pipelines" in lineage, lineage[:2000]
                positions = [lineage.find(f" {phase} Latest event") for phase in PHASES]
                assert all(p >= 0 for p in positions), lineage[:2000]
                # Each node: its checks (two on transactions and on budget_actuals; their state is the
                # latest evaluation, whichever tenant's), its four tenants, one of them failed.
                assert lineage.count("Asset checks") == 4, lineage[:2000]
                assert len(re.findall(r"\d / 2 Passed", lineage)) == 2, lineage[:2000]
                assert lineage.count("4 partitions") == 4 and lineage.count("75% filled (1 failed)") == 4, lineage

                page = _page_text(stack.url(f"/assets/economic/transactions?view=partitions&partition={A}"),
                                  tmp_path / "chromium", ARTIFACTS / f"transactions-partition-{A}.png",
                                  ready=r"Materialized \(3\).*Latest materialization.* duration_seconds ")
                assert "economic / transactions" in page and "Failed (1)" in page and "Materialized (3)" in page, page
                selected = page.split("Latest materialization", 1)
                assert len(selected) == 2 and f" {A} " in selected[0], page
                for label in ("fetched", "new", "pages", "api_calls", "duration_seconds"):
                    assert f" {label} " in selected[1], (label, selected[1][:1500])
                assert dagster_run[runs[A][-1]["run_id"]][:8] in selected[1], selected[1][:1500]

                checks_page = _page_text(stack.url("/assets/economic/transactions?view=checks"),
                                         tmp_path / "chromium", ARTIFACTS / "transactions-checks.png",
                                         ready=r"Checks \(2\).*row_counts")
                assert "Checks (2)" in checks_page and "draft_exclusion" in checks_page and "row_counts" in checks_page
                assert not _processes_with(str(tmp_path / "chromium")), "chromium left processes behind"
                print(f"{time.monotonic() - stack.started:6.1f} s  pages checked; screenshots in {ARTIFACTS}")

            # ---- the backfills end; the failed run is not retried (a step failure)
            def backfill_status(backfill_id):
                status = _gql(stack, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
                return status if status not in ("REQUESTED", "CANCELING") else None

            assert stack.wait_for("the first backfill to complete", lambda: backfill_status(first)) == "COMPLETED_SUCCESS"
            assert stack.wait_for("the second backfill to complete", lambda: backfill_status(second)) == "COMPLETED_SUCCESS"
            assert stack.wait_for("the third backfill to complete", lambda: backfill_status(third)) in (
                "COMPLETED_FAILED", "FAILED")
            will_retry = stack.wait_for("the retry daemon to decide on the failed run",
                                        lambda: _run(stack, failed_run)["tags"].get("dagster/will_retry"))
            assert will_retry == "false"
        except BaseException:
            print(stack.report())
            raise
        finally:
            stack.stop()
        left = _processes_with(f"DAGSTER_HOME={env['DAGSTER_HOME']}")
        assert not left, f"processes left after the stack stopped: {left}"
        print(f"UI end to end in {time.monotonic() - started:.1f} s")


def _asset_keys(system: str) -> dict:
    from dagster import AssetKey

    return {phase: AssetKey([system, phase]) for phase in PHASES}
