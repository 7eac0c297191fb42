"""`b123 demo`, what `make demo` runs, on the embedded defaults in a fresh B123_HOME."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_demo_updates_a_tenant_of_every_system_and_runs_the_doctor(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B123_", "DAGSTER_"))}
    env["B123_HOME"] = str(tmp_path / ".b123")

    demo = subprocess.run([sys.executable, "-m", "b123_pipelines.cli", "demo", "--entries", "400"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "Request 1: done" in out and "loaded as figures: 0" in out
    for tenant in ("demo-nav", "demo-bc", "demo-uniconta", "demo-onprem"):
        assert f"{tenant}" in out and "=> Hentede" in out.split(tenant, 1)[1].splitlines()[0]
    assert "FEJL  Regnskabssystemets licens" in out and "1 ting skal rettes" in out
    assert "licence of Microsoft Dynamics C5 expired" in out
    assert (tmp_path / ".b123" / "b123.db").exists()
