"""One first-login tick over 10,000 tenants, 100,000 users and 20,000 new logins (issue 3).

    python -m benchmarks.first_login_tick [--tenants N --users-per-tenant N --logins N]

Builds the app tables in a fresh PostgreSQL schema, then times the sensor's evaluation as the
daemon runs it (build_sensor_context, an instance with every tenant's run history empty): the
decision queries, the rules and the run requests. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time

import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context

from b123_pipelines import sensors
from b123_pipelines import tables as t
from b123_pipelines.db import engine_for
from b123_pipelines.definitions import build_definitions
from b123_pipelines.resources import Warehouse
from benchmarks.run import drop_schema, new_schema

UTC = dt.timezone.utc


def populate(engine, tenants: int, users_per_tenant: int, logins: int, now: dt.datetime) -> None:
    rng = random.Random(3)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(t.roles.insert(), [dict(role="controller", can_fetch_figures=True),
                                        dict(role="viewer", can_fetch_figures=False)])
        conn.execute(t.tenants.insert(), [dict(
            tenant_id=f"t{i:05d}", name=f"Firma {i}", system="economic" if i % 10 else "onpremise",
            timezone="Europe/Copenhagen", locale="da", enabled=i % 50 != 0, awaiting_credentials=i % 97 == 0,
            created_at=now) for i in range(tenants)])
        conn.execute(t.users.insert(), [dict(
            user_id=f"u{i:06d}", tenant_id=f"t{i // users_per_tenant:05d}",
            role="controller" if i % 3 else "viewer", auto_refresh=i % 4 != 0)
            for i in range(tenants * users_per_tenant)])
        # Yesterday's logins (not first logins today) and a few updates already done today.
        conn.execute(t.user_logins.insert(), [dict(
            user_id=f"u{u:06d}", tenant_id=f"t{u // users_per_tenant:05d}",
            logged_in_at=midnight - dt.timedelta(minutes=rng.randrange(1, 600)))
            for u in rng.sample(range(tenants * users_per_tenant), logins // 2)])
        conn.execute(t.sync_runs.insert(), [dict(
            run_id=f"r{i}", tenant_id=f"t{i:05d}", system="economic", trigger="first_login",
            started_at=midnight + dt.timedelta(minutes=5), finished_at=midnight + dt.timedelta(minutes=6),
            status="succeeded") for i in range(0, tenants, 7)])
    cursor = max_login(engine)
    with engine.begin() as conn:
        conn.execute(t.user_logins.insert(), [dict(
            user_id=f"u{u:06d}", tenant_id=f"t{u // users_per_tenant:05d}",
            logged_in_at=midnight + dt.timedelta(seconds=rng.randrange(60, 3600)))
            for u in (rng.randrange(tenants * users_per_tenant) for _ in range(logins))])
    return cursor


def max_login(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.user_logins.c.login_id), 0))).scalar()


def measure(tenants: int = 10_000, users_per_tenant: int = 10, logins: int = 20_000) -> dict:
    url, schema = new_schema()
    try:
        engine = engine_for(url)
        now = dt.datetime.now(UTC).replace(hour=2)  # 03:00 in Copenhagen, on the logins' day
        cursor = populate(engine, tenants, users_per_tenant, logins, now)
        sensor = build_definitions().resolve_sensor_def("first_login_updates")
        clock, sensors.now = sensors.now, lambda: now  # the logins' day, whenever this runs
        try:
            with DagsterInstance.ephemeral() as instance:
                context = build_sensor_context(instance=instance, cursor=str(cursor),
                                               resources={"warehouse": Warehouse(database_url=url)})
                started = time.perf_counter()
                result = sensor(context)
                seconds = time.perf_counter() - started
        finally:
            sensors.now = clock
        engine.dispose()
        return {"tenants": tenants, "users": tenants * users_per_tenant, "new_logins": logins,
                "runs_requested": len(result.run_requests), "tick_seconds": round(seconds, 3)}
    finally:
        drop_schema(schema)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--users-per-tenant", type=int, default=10)
    parser.add_argument("--logins", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.tenants, args.users_per_tenant, args.logins)))


if __name__ == "__main__":
    main()
