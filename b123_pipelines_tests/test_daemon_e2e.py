"""End to end, as production runs it: a real `dagster-daemon` and `dagster-webserver` on loopback,
Dagster's storage on PostgreSQL (the top-level dagster.yaml), the warehouse on PostgreSQL.

The test writes only what the budget123 app writes (a tenant, a role, a user, a login, a refresh
request) and reads only what it reads (sync_runs, sync_requests); the sensors do everything else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from b123_pipelines import tables as t
from b123_pipelines.db import engine_for, new_engine, upgrade
from b123_emulators.economic import EconomicEmulator
from b123_pipelines.tenants import add_role, add_tenant, add_user, record_login, request_refresh
from b123_pipelines.vault import Vault
from b123_pipelines_tests.conftest import PG_SERVER, drop_schema, economic_connection, postgres_schema_url
from b123_pipelines_tests.helpers import entry_ids

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # .venv/bin under `make test`
WAIT = 120  # seconds, for each thing the sensors must bring about
TENANT, USER, ROLE = "e2e-acme", "e2e-anna", "e2e-bookkeeper"
STATUS_MESSAGE = re.compile(r"^Hentede [\d.]+ transaktion(er)? på \d+,\d sekunder")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dagster_database():
    """A fresh PostgreSQL database for Dagster's run, event and schedule storage."""
    name = f"b123_e2e_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture
def warehouse_url():
    url, schema = postgres_schema_url()
    try:
        migrator = new_engine(url)
        upgrade(migrator, app_tables=True)  # what `b123 db upgrade --app-tables` does
        migrator.dispose()
        yield url
    finally:
        engine_for(url).dispose()
        engine_for.cache_clear()
        drop_schema(schema)


class Process:
    """A subprocess in its own process group (its code servers and run workers die with it)."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path):
        self.name, self.log = name, log
        self._out = open(log, "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(text[-lines:])

    def close(self) -> None:
        self._out.close()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        self.popen.poll()  # reap the leader
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        return True


class Stack:
    """The daemon and the webserver, with what the test needs to watch them."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs = env, logs
        self.port = _free_port()
        self.started = time.monotonic()
        self.processes: list[Process] = []

    def start(self) -> None:
        env, logs = self.env, self.logs
        self.processes.append(Process(
            "dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env,
            logs / "daemon.log"))
        self.processes.append(Process(
            "dagster-webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                                  "-p", str(self.port)], env, logs / "webserver.log"))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def check_alive(self) -> None:
        for process in self.processes:
            assert process.alive(), f"{process.name} exited with {process.popen.returncode}"

    def wait_for(self, what: str, probe, timeout: float = WAIT, detail=lambda: ""):
        """Polls `probe` until it returns something truthy; fails if a process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = probe()
            if value:
                print(f"{time.monotonic() - self.started:6.1f} s  {what}")
                return value
            assert time.monotonic() < deadline, f"gave up after {timeout:.0f} s waiting for {what} {detail()}"
            time.sleep(0.5)

    def server_info(self) -> int:
        try:
            with urllib.request.urlopen(self.url("/server_info"), timeout=5) as response:
                return response.status
        except (urllib.error.URLError, OSError):
            return 0

    def graphql(self, query: str, variables: dict) -> dict:
        request = urllib.request.Request(self.url("/graphql"), method="POST",
                                         data=json.dumps({"query": query, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]

    def finished_run(self, run_id: str) -> dict | None:
        """The run as the webserver shows it, once Dagster has finished it; tags as a dict."""
        run = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
            return None
        return {**run, "tags": {tag["key"]: tag["value"] for tag in run["tags"]}}

    def stop(self, grace: float = 6) -> None:
        """SIGTERM to every process group, SIGKILL to what is left after `grace` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes:
                process.signal(sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(p.group_alive() for p in self.processes):
                time.sleep(0.1)
            grace = 5
        for process in self.processes:
            try:
                process.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            process.close()

    def report(self) -> str:
        return "\n".join(f"----- last lines of {p.name} -----\n{p.tail()}" for p in self.processes)


RUN_QUERY = """query ($runId: ID!) { runOrError(runId: $runId) {
  __typename ... on Run { status jobName tags { key value } } } }"""


def _sync_runs(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.tenant_id == TENANT)
                            .order_by(t.sync_runs.c.started_at)).mappings().all()


def _succeeded(engine, trigger: str):
    rows = [r for r in _sync_runs(engine) if r["trigger"] == trigger]
    failed = [r for r in rows if r["status"] == "failed"]
    assert not failed, f"the {trigger} update failed: {failed[0]['message']}"
    return next((r for r in rows if r["status"] == "succeeded"), None)


def _partitions(dagster_url: str) -> set[str]:
    engine = sa.create_engine(dagster_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("dynamic_partitions"):
                return set()
            return set(conn.execute(sa.text(
                "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'economic_tenants'")).scalars())
    finally:
        engine.dispose()


def production_stack_env(tmp_path, dagster_database: str, warehouse_url: str) -> tuple[dict, str, str]:
    """A production-like environment: Dagster on PostgreSQL with the top-level dagster.yaml, this
    test's warehouse and a fresh secret key. Returns it, the key and Dagster's database URL."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    key = Fernet.generate_key().decode()
    pg = sa.engine.make_url(PG_SERVER)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "B123_"))},
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_USER": pg.username,
        "DAGSTER_PG_PASSWORD": pg.password or "", "DAGSTER_PG_DB": dagster_database,
        "B123_HOME": str(tmp_path / "b123"), "B123_DATABASE_URL": warehouse_url, "B123_SECRET_KEY": key,
        "B123_HTTP_BACKOFF": "0.01", "B123_HTTP_TIMEOUT": "10", "PYTHONUNBUFFERED": "1",
    }
    return env, key, pg.set(database=dagster_database).render_as_string(hide_password=False)


def test_logins_and_refresh_requests_become_syncs_through_the_daemon(tmp_path, dagster_database, warehouse_url):
    env, key, dagster_url = production_stack_env(tmp_path, dagster_database, warehouse_url)
    engine = engine_for(warehouse_url)

    with EconomicEmulator(entries=400, seed=11, app_secret_token="app-secret-SENTINEL-1",
                          grant_token="grant-token-SENTINEL-2") as emulator:
        # What the app writes when a customer signs up: the tenant, a role, a user with auto-refresh.
        add_tenant(engine, Vault(key), TENANT, "economic", "Acme ApS", economic_connection(emulator))
        add_role(engine, ROLE, can_fetch_figures=True)
        add_user(engine, USER, TENANT, ROLE, auto_refresh=True)

        stack = Stack(env, tmp_path)
        try:
            stack.start()
            assert stack.wait_for("the webserver to answer /server_info", lambda: stack.server_info() == 200)
            # The onboarding sensor makes the tenant a partition before anyone logs in.
            stack.wait_for("the tenant_onboarding sensor to add the partition",
                           lambda: TENANT in _partitions(dagster_url))

            # A login: the first_login_updates sensor starts a sync; the run closes its row.
            record_login(engine, USER)
            first = stack.wait_for("a first-login update to succeed", lambda: _succeeded(engine, "first_login"))
            assert first["user_id"] == USER
            posted = len(list(emulator.posted_entries()))
            assert first["transactions_fetched"] == posted
            assert STATUS_MESSAGE.match(first["message"]), first["message"]
            assert first["message"].startswith(f"Hentede {posted:,}".replace(",", ".") + " transaktioner på ")

            # New entries in e-conomic, and the user presses "Update accounting figures" as soon as
            # the app shows the first update done (Dagster may still be finishing that run).
            booked = emulator.book_entries(4)
            request_id = request_refresh(engine, TENANT, USER)

            # The webserver shows the first run, on Dagster's PostgreSQL storage, with our tags.
            run = stack.wait_for("Dagster to finish the first-login run", lambda: stack.finished_run(first["run_id"]))
            assert run["status"] == "SUCCESS" and run["jobName"] == "economic_sync"
            assert run["tags"]["b123/trigger"] == "first_login" and run["tags"]["b123/user"] == USER
            assert run["tags"]["dagster/partition"] == TENANT
            assert stack.server_info() == 200

            def request_row():
                with engine.connect() as conn:
                    return conn.execute(sa.select(t.sync_requests)
                                        .where(t.sync_requests.c.request_id == request_id)).mappings().one()

            def served():
                row = request_row()
                assert row["state"] not in ("refused", "failed"), f"request {row['state']}: {row['reason']}"
                return row if row["state"] == "done" else None

            request = stack.wait_for("the refresh request to be served", served,
                                     detail=lambda: f"(request: {dict(request_row())}; runs: {_sync_runs(engine)})")
            assert request["run_id"]
            second = next(r for r in _sync_runs(engine) if r["run_id"] == request["run_id"])
            assert second["status"] == "succeeded" and second["trigger"] == "refresh_request"
            assert second["user_id"] == USER
            assert second["transactions_fetched"] == len(booked) == 4
            assert second["message"].startswith("Hentede 4 transaktioner på "), second["message"]
            assert [r["status"] for r in _sync_runs(engine)] == ["succeeded", "succeeded"]
            assert entry_ids(engine, TENANT) == sorted(int(e["entryNumber"]) for e in emulator.posted_entries())
            assert set(booked) <= set(entry_ids(engine, TENANT))
            run = stack.wait_for("Dagster to finish the refresh run", lambda: stack.finished_run(second["run_id"]))
            assert run["status"] == "SUCCESS" and run["tags"]["b123/trigger"] == "refresh_request"
            assert run["tags"]["b123/request"] == str(request_id)
            assert stack.server_info() == 200
            print(f"end to end in {time.monotonic() - stack.started:.1f} s")
        except BaseException:
            print(stack.report())
            raise
        finally:
            stack.stop()


def test_a_request_made_while_dagster_finishes_a_closed_run_starts_a_new_update(tmp_path):
    """The race the end-to-end test met: the app shows the update done (sync_runs closed) while
    Dagster still has the run STARTED. Joining that run would leave the request 'running' forever."""
    from b123_pipelines import triggers
    from b123_pipelines.db import now

    engine = engine_for(f"sqlite:///{tmp_path / 'warehouse.db'}")
    add_tenant(engine, Vault(Fernet.generate_key().decode()), TENANT, "economic", "Acme ApS",
               {"base_url": "http://127.0.0.1:9", "app_secret_token": "a", "grant_token": "g"})
    add_role(engine, ROLE, can_fetch_figures=True)
    add_user(engine, USER, TENANT, ROLE, auto_refresh=True)
    with engine.begin() as conn:
        conn.execute(t.sync_runs.insert().values(
            run_id="closed-run", tenant_id=TENANT, system="economic", trigger="first_login", user_id=USER,
            started_at=now(), finished_at=now(), status="succeeded", message="Hentede 4 transaktioner"))
    request_refresh(engine, TENANT, USER)

    with engine.connect() as conn:
        closed = triggers.refresh_starts(conn, {TENANT: ("closed-run", "running")})
    with engine.begin() as conn:
        conn.execute(t.sync_runs.update().values(status="running", finished_at=None))
    with engine.connect() as conn:
        running = triggers.refresh_starts(conn, {TENANT: ("closed-run", "running")})

    assert [s.trigger for s in closed.starts] == ["refresh_request"]
    assert [(u["state"], u["run_id"]) for u in closed.updates] == [("queued", None)]
    assert running.starts == [] and [(u["state"], u["run_id"]) for u in running.updates] == [("running", "closed-run")]
    engine.dispose()
    engine_for.cache_clear()
