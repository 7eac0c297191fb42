"""Where b123-pipelines keeps its state, from the environment.

B123_HOME          folder for the embedded SQLite warehouse, the local DAGSTER_HOME and the demo's
                   generated secret key (default: .b123/ in the working directory)
B123_DATABASE_URL  SQLAlchemy URL of the warehouse and app tables (default: SQLite in B123_HOME)
B123_SECRET_KEY    Fernet key that encrypts stored credentials (default: B123_HOME/secret.key,
                   which only the demo and the CLI generate; production sets the variable)
DAGSTER_HOME       Dagster's instance folder (default: B123_HOME/dagster)
"""

import os
from pathlib import Path


def b123_home() -> Path:
    return Path(os.environ.get("B123_HOME") or ".b123").absolute()


def database_url() -> str:
    return os.environ.get("B123_DATABASE_URL") or f"sqlite:///{b123_home() / 'b123.db'}"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or b123_home() / "dagster").absolute()


def secret_key_file() -> Path:
    return b123_home() / "secret.key"
