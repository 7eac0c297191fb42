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
from b123_pipelines_tests.helpers import count, entry_ids, nonzero, warehouse_sums

SECRETS = ("app-secret-SENTINEL-1", "grant-token-SENTINEL-2")


def _add(tenant_id: str, connection, *extra: str) -> int:
    raw = connection if isinstance(connection, str) else json.dumps(connection)
    return main(["tenant", "add", tenant_id, "--system", "economic", "--name", "Firma ApS", "--connection", raw,
                 *extra])


def _start_sync(tenant_id: str = "acme", env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "sync", tenant_id],
                            env=env or os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pages(engine, sync: subprocess.Popen, pages: int = 1):
    """Waits until the sync has committed `pages` pages; returns that log line."""
    deadline = time.monotonic() + 120
    while True:
        assert sync.poll() is None, f"the sync ended early: {sync.communicate()}"
        assert time.monotonic() < deadline, "the sync made no progress"
        with engine.connect() as conn:
            line = conn.execute(sa.select(t.sync_log).where(t.sync_log.c.page >= pages).limit(1)).mappings().first()
        if line:
            return line
        time.sleep(0.05)


def _rows_of(engine, tenant_id: str) -> dict[str, int]:
    """Rows of the tenant id, per table that has any."""
    counts = {table.name: count(engine, table, tenant_id=tenant_id) for table in t.all_tables()
              if "tenant_id" in table.c}
    return {name: n for name, n in counts.items() if n}


def _entry_pages(emu) -> list:
    return [r for r in emu.requests if r.path.endswith("/entries") and "/journals/" not in r.path
            and r.query.get("pagesize") != "1"]


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
