"""Alembic migrations of the warehouse and operations tables, configured in code (no alembic.ini).

One history (`versions/`) versions `tables.MIGRATED_METADATA`: the warehouse tables, which are the
contract the budget123 app reads, and our operations tables. The app's own tables are not in it:
budget123 owns them in production, and only development creates them (`b123 db upgrade
--app-tables`). `b123_pipelines.db.upgrade` runs this history; `python -m b123_pipelines.migrations`
is Alembic's command line on it, e.g. for a new revision:

    python -m b123_pipelines.migrations revision --rev-id NNNN -m "what changes and why"
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from b123_pipelines import tables as t

HERE = Path(__file__).parent

#: The schema as it was before migrations: a database whose tables `metadata.create_all` made
#: without an alembic_version table is at this revision (db.upgrade stamps it so).
BASELINE = "0001"

MIGRATED_TABLES = frozenset(name for metadata in t.MIGRATED_METADATA for name in metadata.tables)


def config(url: str | None = None, connection=None) -> Config:
    """Alembic's configuration: the scripts here, and a connection (or a URL) to run them on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates %
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def include_name(name, type_, _parent_names) -> bool:
    """Only our tables: the app's tables and alembic_version are not part of this history."""
    return type_ != "table" or name in MIGRATED_TABLES
