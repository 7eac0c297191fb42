"""Issue 11, items 4-7: removing a tenant, input that does not fit, secrets off the command line,
output a person can read. Each test failed before its fix."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from b123_emulators.economic import EconomicEmulator
from b123_pipelines import guard
from b123_pipelines import tables as t
from b123_pipelines.cli import main
from b123_pipelines.db import now
from b123_pipelines.runner import local_instance, run_sync
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.helpers import count, entry_ids, nonzero, wait_for_pages, warehouse_sums

SECRETS = ("app-secret-SENTINEL-1", "grant-token-SENTINEL-2")


def _add(tenant_id: str, connection, *extra: str) -> int:
    raw = connection if isinstance(connection, str) else json.dumps(connection)
    return main(["tenant", "add", tenant_id, "--system", "economic", "--name", "Firma ApS", "--connection", raw,
                 *extra])


def _start_sync(tenant_id: str = "acme", env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", tenant_id],
                            env=env or os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows_of(engine, tenant_id: str) -> dict[str, int]:
    """Rows of the tenant id, per table that has any."""
    counts = {table.name: count(engine, table, tenant_id=tenant_id) for table in t.all_tables()
              if "tenant_id" in table.c}
    return {name: n for name, n in counts.items() if n}


def _entry_pages(emu) -> list:
    return [r for r in emu.requests if r.path.endswith("/entries") and "/journals/" not in r.path
            and r.query.get("pagesize") != "1"]


# ---------------------------------------------------------------- 4. removing a tenant
def test_removing_a_tenant_mid_sync_stops_the_sync_and_leaves_nothing(env, engine, capsys):
    """Before: the rows, the cursor and the log stayed, the running sync went on loading after the
    removal, and a tenant added again under the id inherited all of it."""
    # Enough entries that their key ranges outnumber the ones fetched side by side ahead of the sync.
    with EconomicEmulator(entries=30000, seed=7, app_secret_token=SECRETS[0], grant_token=SECRETS[1]) as old:
        assert _add("acme", economic_connection(old)) == 0
        old.faults.page_delay = 0.3
        sync = _start_sync()
        line = wait_for_pages(engine, sync)
        assert line["pages_total"] > 3

        assert main(["tenant", "remove", "acme"]) == 0
        removed = _rows_of(engine, "acme")
        out, err = sync.communicate(timeout=120)

        assert removed == {} and _rows_of(engine, "acme") == {}  # and nothing loaded after the removal
        assert sync.returncode == 1 and "Traceback" not in err
        assert "the tenant was removed from budget123 while this update ran" in err
        assert len(_entry_pages(old)) < line["pages_total"]  # it stopped paging
        said = capsys.readouterr().out
        assert f"Update run {line['run_id']}" in said and "Removed tenant 'acme'" in said
        assert not local_instance().has_dynamic_partition("economic_tenants", "acme")

    # The id again, for another agreement: only that agreement's figures.
    with EconomicEmulator(entries=1500, seed=8, app_secret_token="other-app-token",
                          grant_token="other-grant-token") as new:
        assert _add("acme", {"base_url": new.url, "app_secret_token": "other-app-token",
                             "grant_token": "other-grant-token"}) == 0
        assert main(["sync", "acme"]) == 0
        assert entry_ids(engine, "acme") == sorted(int(e["entryNumber"]) for e in new.posted_entries())
        assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(new.sums_by_account_month())


def test_keep_data_keeps_only_the_figures_and_says_so(env, engine, emulator, tenant, capsys):
    assert run_sync("acme", echo=None).ok
    loaded = count(engine, t.transactions, tenant_id="acme")

    assert main(["tenant", "remove", "acme", "--keep-data"]) == 0

    out = capsys.readouterr().out
    assert "KEPT, as asked (--keep-data)" in out and f"transactions {loaded:,}" in out
    left = _rows_of(engine, "acme")
    assert left["transactions"] == loaded and "budget_actuals" in left
    assert not {"tenants", "credentials", "connection_settings", "sync_cursors", "sync_log", "dirty_periods",
                "sync_leases"} & set(left)
    # An id with rows left is not handed to a new tenant: it would inherit them.
    assert _add("acme", economic_connection(emulator)) == 2
    assert "still has rows of a removed tenant" in capsys.readouterr().err
    assert main(["tenant", "remove", "acme"]) == 0
    assert "had been removed already" in capsys.readouterr().out
    assert _rows_of(engine, "acme") == {}
    assert _add("acme", economic_connection(emulator)) == 0


def test_an_update_that_does_not_end_in_time_is_stopped(env, engine, tenant, capsys):
    """The lease says an update is running; it does not end within --wait, so it is sent SIGTERM."""
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    threading.Thread(target=stuck.wait, daemon=True).start()  # reaped as its parent would: no zombie
    try:
        with engine.begin() as conn:
            conn.execute(t.sync_leases.insert().values(tenant_id="acme", run_id="stuck-run", host=guard.HOST,
                                                       pid=stuck.pid, acquired_at=now(), renewed_at=now()))
        started = time.monotonic()

        assert main(["tenant", "remove", "acme", "--wait", "0.5"]) == 0

        assert time.monotonic() - started < 30
        assert stuck.poll() is not None and stuck.returncode != 0
        out = capsys.readouterr().out
        assert "stuck-run" in out and "SIGTERM" in out and "ended when stopped" in out
        assert _rows_of(engine, "acme") == {}
    finally:
        stuck.kill()
        stuck.wait()


def test_no_update_starts_for_a_removed_tenant(env, engine, tenant):
    from b123_pipelines.tenants import UnknownTenant

    with engine.begin() as conn:
        conn.execute(t.tenants.delete())
    with pytest.raises(UnknownTenant):
        guard.acquire(engine, "acme", "late-run")
    assert count(engine, t.sync_leases) == 0


# ---------------------------------------------------------------- 5. input that does not fit
def test_a_tenant_id_with_a_trailing_newline_is_refused(env, engine, emulator, capsys):
    assert _add("abc\n", economic_connection(emulator)) == 2
    assert "Tenant id 'abc\\n' is not valid" in capsys.readouterr().err
    assert count(engine, t.tenants) == 0


@pytest.mark.parametrize("field, value, words", [
    ("grant_token", "grant-token\r\nX-Injected: 1", "grant_token: Value error, contains a control character"),
    ("grant_token", "grant\ttoken", "grant_token: Value error, contains a control character"),
    ("app_secret_token", "", "app_secret_token: Value error, must not be empty"),
    ("grant_token", "   ", "grant_token: Value error, must not be empty"),
])
def test_secrets_must_be_non_empty_without_control_characters(env, engine, emulator, capsys, field, value, words):
    """Before: accepted, then every update failed as 'could not be reached (InvalidHeader)'."""
    connection = {**economic_connection(emulator), field: value}
    assert _add("firma", connection) == 2
    err = capsys.readouterr().err
    assert "'firma'" in err and words in err
    assert "Injected" not in err and "token\t" not in err  # the secret is not shown
    assert count(engine, t.tenants) == 0
    assert _add("firma", economic_connection(emulator)) == 0
    assert main(["tenant", "credentials", "firma", "--connection", json.dumps(connection)]) == 2
    assert words in capsys.readouterr().err


def test_the_new_secret_type_is_a_secret_field():
    from b123_pipelines.connectors.economic import EconomicConnector

    assert EconomicConnector.secret_fields() == ["app_secret_token", "grant_token"]


@pytest.mark.parametrize("argv, words", [
    (["tenant", "add", "firma", "--system", "economic", "--name", "N" * 300, "--connection", "{}"],
     "the name (--name) is 300 characters long; at most 200 fit"),
    (["tenant", "add", "firma", "--system", "economic", "--name", "Firma\nApS", "--connection", "{}"],
     "the name (--name) contains a control character"),
    (["tenant", "add", "firma", "--system", "economic", "--name", "Firma", "--timezone", "Europe/" + "x" * 300,
      "--connection", "{}"], "the time zone (--timezone) is 307 characters long; at most 64 fit"),
    (["role", "add", "R" * 300], "The role (ROLE) is 300 characters long; at most 64 fit"),
    (["user", "add", "u" * 300, "--tenant", "acme", "--role", "controller"],
     "The user id (USER) is 300 characters long; at most 128 fit"),
])
def test_text_longer_than_its_column_is_refused_naming_field_and_limit(env, engine, tenant, capsys, argv, words):
    """Before, on PostgreSQL: a StringDataRightTruncation traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert count(engine, t.roles) == 0 and count(engine, t.users) == 0 and count(engine, t.tenants) == 1


def test_a_refresh_must_name_a_user_of_that_tenant(env, engine, emulator, tenant, capsys):
    assert _add("other", economic_connection(emulator)) == 0
    assert main(["role", "add", "controller", "--can-fetch-figures"]) == 0
    assert main(["user", "add", "olga", "--tenant", "other", "--role", "controller"]) == 0
    capsys.readouterr()

    assert main(["refresh", "acme", "--user", "nosuchuser"]) == 2
    assert "User 'nosuchuser' does not exist" in capsys.readouterr().err
    assert main(["refresh", "acme", "--user", "olga"]) == 2
    assert "User 'olga' belongs to tenant 'other', not 'acme'" in capsys.readouterr().err
    assert count(engine, t.sync_requests) == 0
    assert main(["refresh", "other", "--user", "olga"]) == 0
    assert count(engine, t.sync_requests) == 1


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """A B123_HOME nobody used yet, on the embedded SQLite default, with no key."""
    home = tmp_path / "home"
    monkeypatch.setenv("B123_HOME", str(home))
    for name in ("B123_DATABASE_URL", "B123_SECRET_KEY", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("url, words", [
    ("postgresql+psycopg2://postgres@127.0.0.1:1/test", "Connection refused"),
    ("postgresql+psycopg2://postgres@127.0.0.1:5432/no_such_database_b123", 'database "no_such_database_b123" '
                                                                             "does not exist"),
    ("not a url", "B123_DATABASE_URL is not a database URL"),
])
def test_an_unusable_database_is_one_clear_line(fresh_home, monkeypatch, capsys, url, words):
    """Before: a 130-line traceback."""
    monkeypatch.setenv("B123_DATABASE_URL", url)
    for argv in (["tenant", "list"], ["sync", "acme"], ["db", "current"],
                 ["tenant", "add", "firma", "--system", "economic", "--name", "F", "--connection",
                  json.dumps({"app_secret_token": "a-token", "grant_token": "g-token"})]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ") and words in err and "B123_DATABASE_URL" in err
    assert not (fresh_home / "secret.key").exists()


def test_a_command_failing_on_its_input_creates_no_file(fresh_home, capsys):
    """Before: b123.db and secret.key appeared in a new B123_HOME whatever the input."""
    good = json.dumps({"app_secret_token": "a-token", "grant_token": "g-token"})
    refused = [
        ["tenant", "add", "Bad Id", "--system", "economic", "--name", "F", "--connection", good],
        ["tenant", "add", "firma", "--system", "economic", "--name", "F", "--connection", "{not json"],
        ["tenant", "add", "firma", "--system", "economic", "--name", "F", "--connection", '{"grant_token": ""}'],
        ["tenant", "add", "firma", "--system", "economic", "--name", "N" * 201, "--connection", good],
        ["tenant", "add", "firma", "--system", "economic", "--name", "F", "--timezone", "Mars/Olympus",
         "--connection", good],
        ["tenant", "credentials", "firma", "--connection", good],
        ["tenant", "remove", "firma"],
        ["sync", "firma"],
        ["status", "firma"],
        ["user", "add", "anna", "--tenant", "firma", "--role", "controller"],
        ["role", "add", "R" * 65],
        ["login", "anna"],
        ["refresh", "firma", "--user", "anna"],
    ]
    for argv in refused:
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.startswith("error: "), argv
    assert not fresh_home.exists() or list(fresh_home.iterdir()) == []


def test_no_new_key_beside_credentials_it_cannot_decrypt(env, engine, emulator, monkeypatch, capsys):
    """Before: without B123_SECRET_KEY, 'tenant add' made a new secret.key, and every tenant stored
    with the old key could no longer be read."""
    first_key = env["B123_SECRET_KEY"]
    assert _add("first", economic_connection(emulator)) == 0
    key_file = os.path.join(env["B123_HOME"], "secret.key")

    monkeypatch.delenv("B123_SECRET_KEY")
    assert _add("second", economic_connection(emulator)) == 2
    err = capsys.readouterr().err
    assert "B123_SECRET_KEY is not set" in err and "stored credentials" in err
    assert not os.path.exists(key_file) and count(engine, t.tenants) == 1
    assert main(["tenant", "credentials", "first", "--connection", json.dumps(economic_connection(emulator))]) == 2
    capsys.readouterr()

    monkeypatch.setenv("B123_SECRET_KEY", Fernet.generate_key().decode())
    assert _add("second", economic_connection(emulator)) == 2
    assert "decrypts none of the 1 tenants' credentials" in capsys.readouterr().err
    assert count(engine, t.tenants) == 1

    monkeypatch.setenv("B123_SECRET_KEY", first_key)
    assert _add("second", economic_connection(emulator)) == 0


# ---------------------------------------------------------------- 6. secrets off the command line
def test_connection_from_a_file_or_stdin(env, engine, vault, emulator, tmp_path, monkeypatch, capsys):
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(economic_connection(emulator)))
    assert _add("firma", f"@{path}") == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**economic_connection(emulator),
                                                              "grant_token": "new-grant-token"})))
    assert main(["tenant", "credentials", "firma", "--connection", "-"]) == 0
    with engine.connect() as conn:
        stored = vault.decrypt(conn.execute(sa.select(t.credentials.c.ciphertext)).scalar())
    assert stored == {"app_secret_token": SECRETS[0], "grant_token": "new-grant-token"}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(economic_connection(emulator))))
    assert _add("other", "-") == 0
    capsys.readouterr()

    assert _add("third", f"@{tmp_path / 'missing.json'}") == 2
    assert "cannot read --connection file" in capsys.readouterr().err
    path.write_text("{oops")
    assert _add("third", f"@{path}") == 2
    assert f"--connection is not valid JSON (from {path})" in capsys.readouterr().err
    assert count(engine, t.tenants) == 2


# ---------------------------------------------------------------- 7. output a person can read
def test_a_failed_sync_prints_its_message_and_where_the_details_are(env, engine, emulator, tenant):
    """Before: the message followed by ~90 lines of Dagster's stack trace."""
    emulator.faults.revoked = True

    cli = subprocess.run([sys.executable, "-m", "b123_pipelines.cli", "sync", "acme"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=240)

    assert cli.returncode == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) < 10 and "Traceback" not in cli.stderr, cli.stderr
    assert lines[0].startswith("Tenant 'acme' (e-conomic)") and "Fetch new token automatically" in lines[0]
    with engine.connect() as conn:
        run_id = conn.execute(sa.select(t.sync_runs.c.run_id)).scalar()
    assert lines[-1] == f"details: run {run_id} in the Dagster UI (make ui)"


class TcpProxy:
    """PostgreSQL behind a port of its own, until `cut()`: then its connections drop and nothing
    answers there, as when the database server goes away."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.cut_off:
                    client.close()
                    return
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            for end in (self.listener, *self.sockets):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_database_that_dies_mid_sync_is_one_clear_message(env, engine, emulator, tenant):
    """Before: ~830 lines of stack traces and no clear message. (PostgreSQL: an embedded SQLite file
    does not go away under a running process.)"""
    proxy = TcpProxy()
    through_proxy = sa.engine.make_url(env["B123_DATABASE_URL"]).set(port=proxy.port)
    emulator.faults.page_delay = 0.3
    sync = _start_sync(env={**os.environ, "B123_DATABASE_URL": through_proxy.render_as_string(hide_password=False)})
    run_id = wait_for_pages(engine, sync)["run_id"]

    proxy.cut()
    out, err = sync.communicate(timeout=120)

    assert sync.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) < 10 and "Traceback" not in err, err
    assert lines[0].startswith("Tenant 'acme' (e-conomic): the update stopped because the warehouse database")
    assert "cannot be reached" in lines[0] and "Nothing already loaded was lost" in lines[0]
    assert lines[-1] == f"details: run {run_id} in the Dagster UI (make ui)"
