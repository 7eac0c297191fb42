"""The CLI: bad input gets a clear error naming the tenant and leaves everything as it was."""

from __future__ import annotations

import json

import pytest

from b123_pipelines import tables as t
from b123_pipelines.cli import main
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.helpers import count


def _add(tenant_id: str, connection: str) -> int:
    return main(["tenant", "add", tenant_id, "--system", "economic", "--name", "Firma ApS",
                 "--connection", connection])


@pytest.mark.parametrize("connection, words", [
    ("{not json", "--connection is not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ('{"base_url": "https://restapi.e-conomic.com"}', "app_secret_token: Field required"),
    ('{"app_secret_token": "a", "grant_token": "b", "base_url": "ftp://x"}', "base_url"),
    ('{"app_secret_token": "a", "grant_token": "b", "extra": 1}', "extra"),
])
def test_bad_connection_is_refused_with_the_tenant_named(env, engine, capsys, connection, words):
    assert _add("firma", connection) == 2
    err = capsys.readouterr().err
    assert "'firma'" in err and words in err
    assert count(engine, t.tenants) == 0 and count(engine, t.credentials) == 0


def test_unknown_tenant_and_bad_tenant_id(env, engine, capsys):
    assert main(["sync", "nobody"]) == 2
    assert "Tenant 'nobody' is not known" in capsys.readouterr().err
    assert _add("Not Valid!", "{}") == 2
    assert "Tenant id 'Not Valid!' is not valid" in capsys.readouterr().err


def test_add_list_status_credentials_remove(env, engine, emulator, capsys):
    connection = json.dumps(economic_connection(emulator))
    assert _add("firma", connection) == 0
    assert _add("firma", connection) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["tenant", "list"]) == 0
    listing = capsys.readouterr().out
    assert "firma\teconomic\tFirma ApS" in listing and "SENTINEL" not in listing
    assert main(["sync", "firma"]) == 0
    out = capsys.readouterr().out
    assert "Hentede" in out and "SENTINEL" not in out
    assert main(["status", "firma"]) == 0
    status = capsys.readouterr().out
    assert "Last result:   succeeded" in status and "Hentede" in status
    assert main(["tenant", "credentials", "firma", "--connection", connection]) == 0
    assert main(["tenant", "remove", "firma"]) == 0
    assert count(engine, t.tenants) == 0 and count(engine, t.transactions, tenant_id="firma") == 0
