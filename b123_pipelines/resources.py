"""Dagster resources: the warehouse, and the accounting systems' connectors."""

from __future__ import annotations

import os
from typing import Optional

from dagster import ConfigurableResource, EnvVar
from sqlalchemy.engine import Engine

from b123_pipelines import settings
from b123_pipelines.connectors.base import Connector
from b123_pipelines.db import engine_for
from b123_pipelines.tenants import Tenant, open_connector
from b123_pipelines.vault import Vault


class Warehouse(ConfigurableResource):
    """The warehouse and app tables: SQLite in B123_HOME by default, PostgreSQL via B123_DATABASE_URL."""

    database_url: str

    def engine(self) -> Engine:
        return engine_for(self.database_url)


class AccountingSystems(ConfigurableResource):
    """Opens a tenant's connector with its decrypted credentials and the transport's tuning."""

    secret_key: Optional[str] = None  # B123_SECRET_KEY; falls back to B123_HOME/secret.key locally
    http_timeout: float = 60.0
    http_deadline: float = 300.0
    http_retries: int = 6
    http_backoff: float = 1.0

    def open(self, engine: Engine, tenant: Tenant) -> Connector:
        http = {"timeout": self.http_timeout, "deadline": self.http_deadline, "retries": self.http_retries,
                "backoff": self.http_backoff}
        return open_connector(engine, Vault.from_environment(self.secret_key), tenant, http)


def _from_env(name: str):
    """EnvVar where the variable is set (so Dagster never shows the value), else the local default."""
    return EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict:
    return {
        "warehouse": Warehouse(database_url=_from_env("B123_DATABASE_URL") or settings.database_url()),
        "systems": AccountingSystems(
            secret_key=_from_env("B123_SECRET_KEY"),
            # Tests and benchmarks shorten the back-off; production keeps the defaults.
            http_backoff=float(os.environ.get("B123_HTTP_BACKOFF", "1.0")),
            http_timeout=float(os.environ.get("B123_HTTP_TIMEOUT", "60")),
            http_deadline=float(os.environ.get("B123_HTTP_DEADLINE", "300")),
        ),
    }
