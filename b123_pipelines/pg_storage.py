"""Dagster's PostgreSQL storage with pooled connections (the production instance, dagster.yaml).

dagster-postgres opens a new connection for every statement (it hard-codes SQLAlchemy's NullPool,
so an instance held by many processes accumulates no idle connections). A run writes an event per
log line, materialization and check, so a connection per statement (~10 ms here) was most of
Dagster's bookkeeping per tenant. This storage is dagster-postgres' own, with one small QueuePool
per process shared by its run, event log and schedule storages: `pool_size` connections kept
open (default 2), `max_overflow` more while busy (default 8), recycled after `pool_recycle`
seconds and checked before use, so a restarted database costs one failed ping, not an error.

    storage:
      custom:
        module: b123_pipelines.pg_storage
        class: PooledPostgresStorage
        config:
          postgres_db: {hostname: ..., username: ..., password: ..., db_name: ..., port: ...}
          pool_size: 2

The webserver replaces the pool with its own (dagster's `optimize_for_webserver`), as before.
"""

from __future__ import annotations

from typing import Any, Mapping

from dagster import Field, IntSource
from dagster._core.storage.config import pg_config
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_DEFAULTS = {"pool_size": 2, "max_overflow": 8, "pool_recycle": 3600}


class PooledPostgresStorage(DagsterPostgresStorage):
    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None,
                 token_provider=None, pool_size: int = 2, max_overflow: int = 8, pool_recycle: int = 3600):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self.engine = create_pg_engine(postgres_url, token_provider, isolation_level="AUTOCOMMIT",
                                       pool_size=pool_size, max_overflow=max_overflow,
                                       pool_recycle=pool_recycle, pool_pre_ping=True)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage._engine.dispose()
            storage._engine = self.engine

    @classmethod
    def config_type(cls):
        return {**pg_config(), **{name: Field(IntSource, is_required=False, default_value=value)
                                  for name, value in POOL_DEFAULTS.items()}}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]) -> "PooledPostgresStorage":
        return cls(pg_url_from_config(config_value), config_value.get("should_autocreate_tables", True),
                   inst_data, get_token_provider_from_config(config_value),
                   **{name: config_value.get(name, value) for name, value in POOL_DEFAULTS.items()})
