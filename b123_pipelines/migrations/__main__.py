"""Alembic's command line on b123-pipelines' migrations, on B123_DATABASE_URL (or the embedded SQLite).

    python -m b123_pipelines.migrations revision --rev-id NNNN -m "what changes and why"
    python -m b123_pipelines.migrations revision --rev-id NNNN -m "..." --autogenerate   # against a database at head
    python -m b123_pipelines.migrations history | heads | check

Upgrade with `b123 db upgrade`, which also takes the migration lock and baselines old databases.
"""

import sys

from alembic.config import CommandLine

from b123_pipelines import settings
from b123_pipelines.migrations import config


def main(argv=None) -> None:
    cli = CommandLine(prog="python -m b123_pipelines.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(config(url=settings.database_url()), options)


if __name__ == "__main__":
    main(sys.argv[1:])
