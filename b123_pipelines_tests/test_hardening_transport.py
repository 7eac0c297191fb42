"""Hosts that lie: credentials go only to the configured origin, and every fetch is bounded."""

from __future__ import annotations

import time

import pytest
from b123_emulators.server import EmulatorServer, Request, json_response

from b123_pipelines import tables as t
from b123_pipelines.errors import ConfigurationError
from b123_pipelines.runner import run_sync
from b123_pipelines.tenants import add_tenant
from b123_pipelines_tests.helpers import count, entry_ids, last_run

# The database plays no part in these: SQLite only (the parameter overrides the fixture's).
SQLITE = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


class Thief(EmulatorServer):
    """Another origin (127.0.0.2): whatever reaches it is recorded, headers and all."""

    def __init__(self):
        super().__init__(host="127.0.0.2")
        self.seen: list[dict] = []

    def route(self, request: Request):
        self.seen.append(dict(request.headers))
        return json_response({"collection": [], "pagination": {}})


@pytest.fixture
def thief():
    with Thief() as server:
        yield server


def _fails(words: str, started: float | None = None, within: float = 60):
    outcome = run_sync("acme", echo=None)
    assert not outcome.ok
    assert "Tenant 'acme' (e-conomic)" in outcome.message and words in outcome.message, outcome.message
    if started is not None:
        assert time.monotonic() - started < within
    return outcome


@SQLITE
@pytest.mark.parametrize("fault", ["foreign_next_page", "redirect_to"])
def test_credentials_never_follow_a_link_or_redirect_to_another_host(empty_database_url, env, engine, emulator, tenant, thief, fault):
    setattr(emulator.faults, fault, thief.url)

    _fails("another address")

    assert thief.seen == []
    assert last_run(engine, "acme")["status"] == "failed"


def test_plain_http_is_refused_except_on_this_machine(env, engine, vault):
    connection = {"base_url": "http://restapi.example.com", "app_secret_token": "a", "grant_token": "g"}
    with pytest.raises(ConfigurationError, match="https"):
        add_tenant(engine, vault, "plain", "economic", "Plain ApS", connection)
    assert count(engine, t.tenants) == 0


@SQLITE
def test_a_page_that_points_to_itself_stops_the_update(empty_database_url, env, engine, emulator, tenant):
    emulator.faults.self_loop_next_page = True
    started = time.monotonic()

    _fails("a page it had already read", started)


def test_endless_pages_stop_before_anything_past_the_announced_pages_is_loaded(env, engine, emulator, tenant):
    emulator.faults.endless_pages = True

    _fails("kept sending pages")

    assert len(entry_ids(engine, "acme")) <= emulator.entry_count()
    emulator.faults.endless_pages = False
    assert run_sync("acme", echo=None).ok  # the row-count check passes without --full
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]


@SQLITE
def test_a_retry_after_of_a_day_fails_at_once_saying_when_to_try_again(empty_database_url, env, emulator, tenant):
    emulator.faults.retry_after_seconds = 86400
    started = time.monotonic()

    _fails("update again after", started, within=20)


@SQLITE
def test_a_server_failing_for_good_is_given_up_on_after_the_retries(empty_database_url, env, emulator, tenant):
    emulator.faults.server_errors(1000, status=500)

    _fails("HTTP 500")

    assert [r.status for r in emulator.requests].count(500) == 7  # the first try and six retries


@SQLITE
def test_a_server_dripping_bytes_meets_the_deadline(empty_database_url, env, emulator, tenant, monkeypatch):
    monkeypatch.setenv("B123_HTTP_DEADLINE", "2")
    emulator.faults.drip_bytes_per_second = 20
    started = time.monotonic()

    _fails("took more than 2 s", started, within=30)


@SQLITE
@pytest.mark.parametrize("fault, size", [("gzip_bomb_mb", 2048), ("huge_page_mb", 50)])
def test_responses_are_capped_in_size(empty_database_url, env, engine, emulator, tenant, fault, size):
    setattr(emulator.faults, fault, size)

    _fails("more than 32 MB")

    assert count(engine, t.transactions, tenant_id="acme") == 0


@SQLITE
def test_a_truncated_body_is_an_error_not_a_short_page(empty_database_url, env, engine, emulator, tenant):
    emulator.faults.truncate_body = True

    _fails("broke off")

    assert count(engine, t.accounts, tenant_id="acme") == 0


@SQLITE
def test_an_update_stops_at_budget123s_share_of_a_daily_call_quota(empty_database_url, env, engine, emulator, tenant,
                                                                    monkeypatch):
    from dataclasses import replace

    from b123_pipelines.connectors.economic import EconomicConnector
    from b123_pipelines.connectors.kit.budget import DAILY_SHARE

    assert run_sync("acme", echo=None).ok
    spent = last_run(engine, "acme")["api_calls"]
    loaded = entry_ids(engine, "acme")
    quota = int((spent + 3) / DAILY_SHARE) + 1  # budget123's share leaves three calls for today
    monkeypatch.setattr(EconomicConnector, "budget", replace(EconomicConnector.budget, calls_per_day=quota))
    emulator.book_entries(6)
    emulator.clear_requests()

    _fails("calls it may make to e-conomic today")

    assert len(emulator.requests) == 3 and last_run(engine, "acme")["api_calls"] == 3
    assert entry_ids(engine, "acme") == loaded
