"""The code location: one asset graph per accounting system in the registry, built by one factory."""

from dagster import Definitions, in_process_executor
from sqlalchemy.engine import make_url

from b123_pipelines import settings
from b123_pipelines.assets import build_system_graph
from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.resources import default_resources
from b123_pipelines.retention import run_retention, run_retention_schedule
from b123_pipelines.sensors import build_sensors, credential_health, credential_health_schedule


def build_definitions() -> Definitions:
    database_kind = "postgres" if make_url(settings.database_url()).get_backend_name() == "postgresql" else "sqlite"
    assets, jobs = [], []
    for system in CONNECTORS:
        system_assets, job = build_system_graph(system, database_kind)
        assets += system_assets
        jobs.append(job)
    return Definitions(
        assets=assets, jobs=[*jobs, credential_health, run_retention], sensors=build_sensors(jobs),
        schedules=[credential_health_schedule, run_retention_schedule], resources=default_resources(),
        # Also for the jobs Dagster makes itself (the UI's Materialize and partition backfills):
        # an update is one step, and a process per step would cost seconds for nothing.
        executor=in_process_executor,
    )


defs = build_definitions()
