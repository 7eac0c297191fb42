"""Fixtures: every end-to-end test runs on SQLite and on the local PostgreSQL, over real HTTP."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from b123_pipelines.db import SchemaOutOfDate, engine_for, new_engine, upgrade
from b123_emulators.economic import EconomicEmulator
from b123_pipelines.vault import Vault

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def postgres_schema_url() -> tuple[str, str]:
    """A fresh schema in the local `test` database, reached through the URL's search_path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return f"{PG_SERVER}?options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    engine = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """An SQLite file or a fresh PostgreSQL schema, with no tables yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    url, schema = postgres_schema_url()
    yield url
    try:
        engine_for(url).dispose()
    except SchemaOutOfDate:
        pass  # engine_for made no engine for it
    engine_for.cache_clear()
    drop_schema(schema)


@pytest.fixture
def database_url(empty_database_url):
    """The database at the newest revision with the app's tables (SQLite upgrades itself)."""
    if not empty_database_url.startswith("sqlite"):
        migrator = new_engine(empty_database_url)
        upgrade(migrator, app_tables=True)  # what `b123 db upgrade --app-tables` does; engine_for only checks
        migrator.dispose()
    return empty_database_url


@pytest.fixture
def env(tmp_path, database_url, monkeypatch):
    """The environment a deployment would set, pointing at this test's own database and home."""
    key = Fernet.generate_key().decode()
    values = {
        "B123_HOME": str(tmp_path / "home"),
        "B123_DATABASE_URL": database_url,
        "B123_SECRET_KEY": key,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "B123_HTTP_BACKOFF": "0.01",
        "B123_HTTP_TIMEOUT": "10",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def engine(env):
    return engine_for(env["B123_DATABASE_URL"])


@pytest.fixture
def vault(env):
    return Vault(env["B123_SECRET_KEY"])


@pytest.fixture
def emulator():
    with EconomicEmulator(entries=2400, seed=7, app_secret_token="app-secret-SENTINEL-1",
                          grant_token="grant-token-SENTINEL-2") as emu:
        yield emu


def economic_connection(emu) -> dict:
    return {"base_url": emu.url, "app_secret_token": "app-secret-SENTINEL-1",
            "grant_token": "grant-token-SENTINEL-2"}


@pytest.fixture
def tenant(engine, vault, emulator):
    from b123_pipelines.tenants import add_tenant

    return add_tenant(engine, vault, "acme", "economic", "Acme ApS", economic_connection(emulator))
