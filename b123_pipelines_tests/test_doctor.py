"""The connection doctor: `b123 doctor TENANT` for an on-premise and a cloud tenant, the daily health
job that records its verdict, and on-premise tenants in the sensors (refresh requests, not logins)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context

from b123_pipelines import sensors
from b123_pipelines import tables as t
from b123_pipelines.cli import main
from b123_pipelines.connectors import onprem
from b123_pipelines.definitions import build_definitions
from b123_pipelines.resources import Warehouse
from b123_pipelines.tenants import add_role, add_tenant, add_user, record_login, request_refresh
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.test_onprem import KEY, agent, books, fast_connect, kaelder  # noqa: F401 (fixtures)

SQLITE = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def doctor_lines(capsys, tenant: str) -> tuple[int, list[str]]:
    code = main(["doctor", tenant])
    captured = capsys.readouterr()
    return code, captured.out.splitlines() + captured.err.splitlines()


@SQLITE
def test_the_doctor_prints_one_line_per_check_in_the_tenants_language(empty_database_url, env, kaelder, agent, capsys):
    code, lines = doctor_lines(capsys, "kaelder")

    assert code == 0, lines
    assert lines[0] == "Forbindelsestjek for 'kaelder' (Kælder A/S, on-premise (DataQueryService)):"
    checks = lines[1:-1]
    assert len(checks) == len(onprem.CHECKS) and all(line.startswith("  ok ") for line in checks), lines
    assert any("Agenten svarer på 127.0.0.1" in line and "DataQueryService/1.4.0" in line for line in checks)
    assert any("6 posteringer ligger i en kladde og kommer med, når de er bogført" in line for line in checks)
    assert lines[-1] == "Alt er i orden."

    agent.mode = "firewall"
    code, lines = doctor_lines(capsys, "kaelder")

    assert code == 1
    assert "FEJL" in lines[1] and "firewall" in lines[1] and "Åbn port" in lines[1]
    assert all(line.startswith("  -  ") and "ikke tjekket" in line for line in lines[2:-1]), lines
    assert KEY not in "\n".join(lines)


@SQLITE
def test_a_customisation_the_agent_reads_past_is_a_note_not_a_fault(empty_database_url, env, kaelder, books, capsys):
    books.customise("LedTrans", add="Projekt")
    books.set_licence(dt.date.today() + dt.timedelta(days=5))

    code, lines = doctor_lines(capsys, "kaelder")

    assert code == 0
    notes = [line for line in lines if line.startswith("  OBS")]
    assert len(notes) == 2 and "LedTrans.Projekt added" in notes[1] and "om 5 dage" in notes[0], lines


def test_the_doctor_of_a_cloud_tenant_checks_access_and_counts_the_drafts(env, engine, vault, emulator, capsys):
    add_tenant(engine, vault, "london", "economic", "London Ltd", economic_connection(emulator), locale="en")

    code, lines = doctor_lines(capsys, "london")

    assert code == 0, lines
    assert lines[1] == "  ok    Access to e-conomic with the stored credentials: they work"
    waiting = len(emulator.draft_entries())
    assert lines[2] == (f"  ok    Draft journals: {waiting} entries are in a draft journal and come over once posted "
                        "(budget123 fetches posted entries only)")

    emulator.faults.revoked = True
    code, lines = doctor_lines(capsys, "london")

    assert code == 1
    assert lines[1].startswith("  FAIL  Access to e-conomic") and "Fetch new token automatically" in lines[1]
    assert "grant-token-SENTINEL" not in "\n".join(lines)


def test_bad_input_is_exit_2(env, engine, capsys):
    assert main(["doctor", "nobody"]) == 2
    assert "Tenant 'nobody' is not known" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
def test_the_daily_health_job_records_the_doctors_verdict(env, engine, vault, kaelder, books, emulator):
    add_tenant(engine, vault, "acme", "economic", "Acme ApS", economic_connection(emulator))
    books.set_licence(dt.date(2025, 12, 31))

    with DagsterInstance.ephemeral() as instance:
        assert build_definitions().resolve_job_def("credential_health").execute_in_process(instance=instance).success

    with engine.connect() as conn:
        checks = {r.tenant_id: r for r in conn.execute(sa.select(t.credential_checks))}
    assert checks["acme"].ok and checks["acme"].warning is None
    assert not checks["kaelder"].ok
    assert checks["kaelder"].warning.startswith("Regnskabssystemets licens: licensen til Microsoft Dynamics C5 "
                                                "udløb 2025-12-31")
    assert KEY not in str(checks)


def test_onpremise_tenants_are_not_started_by_first_logins_but_by_refresh_requests(env, engine, kaelder, monkeypatch):
    add_role(engine, "controller", True)
    add_user(engine, "eva", "kaelder", "controller", auto_refresh=True)
    defs = build_definitions()
    resources = {"warehouse": Warehouse(database_url=env["B123_DATABASE_URL"])}
    now = dt.datetime.now(dt.timezone.utc)
    monkeypatch.setattr(sensors, "now", lambda: now)
    record_login(engine, "eva", now - dt.timedelta(minutes=1))

    with DagsterInstance.ephemeral() as instance:
        login = defs.resolve_sensor_def("first_login_updates")(build_sensor_context(instance=instance, resources=resources))
        request_refresh(engine, "kaelder", "eva")
        refresh = defs.resolve_sensor_def("refresh_requests")(build_sensor_context(instance=instance, resources=resources))

    assert login.run_requests == []
    assert [(r.job_name, r.partition_key, r.tags["b123/trigger"]) for r in refresh.run_requests] == [
        ("onprem_sync", "kaelder", "refresh_request")]
