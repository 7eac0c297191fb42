"""`b123 tenant pause|resume`: the data team stops and restarts a tenant's automatic updates."""

from __future__ import annotations

import sqlalchemy as sa

from b123_pipelines import tables as t, triggers
from b123_pipelines.cli import main
from b123_pipelines.tenants import add_role, add_user, get_tenant, request_refresh


def _refusals(engine) -> list:
    with engine.begin() as conn:
        decision = triggers.refresh_starts(conn, {})
        triggers.apply_request_updates(conn, decision.updates)
    return [u["reason"] for u in decision.updates if u["state"] == "refused"], decision.starts


def test_pause_stops_the_sensors_and_resume_lets_them_start_again(env, engine, tenant, capsys):
    add_role(engine, "bookkeeper", can_fetch_figures=True)
    add_user(engine, "anna", "acme", "bookkeeper", auto_refresh=True)

    assert main(["tenant", "pause", "acme"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Paused tenant 'acme' (Acme ApS, economic).") and "b123 tenant resume acme" in out
    assert get_tenant(engine, "acme").enabled is False
    assert main(["tenant", "list"]) == 0
    assert "(disabled)" in capsys.readouterr().out
    request_refresh(engine, "acme", "anna")
    refused, starts = _refusals(engine)
    assert refused == ["Kunden er deaktiveret."] and starts == []
    assert main(["tenant", "pause", "acme"]) == 0
    assert capsys.readouterr().out.startswith("Tenant was paused already: tenant 'acme'")

    assert main(["tenant", "resume", "acme"]) == 0
    assert capsys.readouterr().out.startswith("Resumed tenant 'acme' (Acme ApS, economic). Its next login")
    assert get_tenant(engine, "acme").enabled is True
    request_refresh(engine, "acme", "anna")
    refused, starts = _refusals(engine)
    assert refused == [] and [(s.tenant_id, s.trigger) for s in starts] == [("acme", "refresh_request")]
    assert main(["tenant", "resume", "acme"]) == 0
    assert capsys.readouterr().out.startswith("Tenant was not paused: tenant 'acme'")


def test_pause_names_a_running_update_and_an_unknown_tenant_is_refused(env, engine, tenant, capsys):
    with engine.begin() as conn:
        conn.execute(t.sync_runs.insert().values(run_id="run-1", tenant_id="acme", system="economic",
                                                 trigger="manual", started_at=sa.func.now(), status="running"))
    assert main(["tenant", "pause", "acme"]) == 0
    assert "Update run run-1 is still running and finishes" in capsys.readouterr().out
    assert main(["tenant", "pause", "nobody"]) == 2
    assert "Tenant 'nobody' is not known" in capsys.readouterr().err
    assert main(["tenant", "resume", "nobody"]) == 2
