"""The code location loads, its graph has the promised shape, and the production instance config works."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, Definitions, job, op

from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.definitions import build_definitions
from b123_pipelines_tests.conftest import PG_SERVER

ROOT = Path(__file__).resolve().parents[1]


@op
def _noop():
    pass


@job
def _noop_job():
    _noop()


def test_definitions_are_loadable():
    Definitions.validate_loadable(build_definitions())


def test_one_graph_per_system_with_owners_kinds_pool_and_checks():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    for system in CONNECTORS:
        keys = [AssetKey([system, p]) for p in ("accounts", "dimensions", "transactions", "budget_actuals")]
        for upstream, downstream in zip(keys, keys[1:]):
            assert upstream in graph.get(downstream).parent_keys
        for key in keys:
            node = graph.get(key)
            assert node.group_name == system and node.owners == ["team:data"]
            assert system in node.kinds and node.description
            assert node.pools == {f"{system}_api"}
            assert node.partitions_def.name == f"{system}_tenants"
        checks = {k.name for k in graph.asset_check_keys}
        assert {"draft_exclusion", "row_counts", "actuals_match_transactions", "reconciliation"} <= checks
        assert defs.resolve_job_def(f"{system}_sync").partitions_def.name == f"{system}_tenants"


def test_production_dagster_yaml_loads_against_postgres(tmp_path, monkeypatch):
    db = "b123_dagster_yaml_test"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    try:
        shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
        for name, value in {"DAGSTER_HOME": str(tmp_path), "DAGSTER_PG_HOST": "127.0.0.1",
                            "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres",
                            "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": db}.items():
            monkeypatch.setenv(name, value)
        instance = DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        assert instance.get_runs() == []
        # Pooled connections (pg_storage.py), one pool for the run, event log and schedule storages.
        engine = instance.run_storage._engine
        assert type(engine.pool).__name__ == "QueuePool" and instance.event_log_storage._engine is engine
        assert _noop_job.execute_in_process(instance=instance).success
        assert [run.status.value for run in instance.get_runs()] == ["SUCCESS"]
        assert engine.pool.checkedin() >= 1  # connections kept for the next statement
        instance.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()
