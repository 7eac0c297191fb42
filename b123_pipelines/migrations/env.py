"""Alembic's environment: runs on the connection db.upgrade hands over, or on the configured URL."""

from alembic import context

from b123_pipelines import tables as t
from b123_pipelines.migrations import include_name

config = context.config


def render_item(type_, obj, _autogen_context):
    """Autogenerate writes Money as `Money()`, which the revision template imports."""
    return "Money()" if type_ == "type" and isinstance(obj, t.Money) else False


OPTIONS = dict(
    target_metadata=list(t.MIGRATED_METADATA),
    include_name=include_name,
    # SQLite alters most things only by copying the table: batch mode does that for us.
    render_as_batch=True,
    compare_type=True,
    render_item=render_item,
)


def run(connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


if config.attributes.get("connection") is not None:
    run(config.attributes["connection"])
elif context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
else:
    from b123_pipelines.db import migrating, new_engine

    engine = new_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with migrating(engine) as connection:
            run(connection)
    finally:
        engine.dispose()
