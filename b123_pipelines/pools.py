"""Each accounting system's pool gets the limit its API budget allows, on the Dagster instance.

The instance yaml can hold only one limit for every pool (`concurrency.pools.default_limit`); a pool
of its own limit is a row in Dagster's storage. So the limits are applied here, from each registered
connector's `budget.updates_at_once` (the `<system>_api` pool bounds the updates of that system that
run at once): by `make up` before the daemon starts, by the CLI on its instance, and in production
by `python -m b123_pipelines.pools` after each deploy (deploy/README.md), which puts every pool back
at its budget's limit. The CLI sets only pools that have no limit of their own yet, so a limit the
data team set by hand (`dagster instance concurrency set`) holds until the next deploy.
"""

from __future__ import annotations

import sys

from dagster import DagsterInstance

from b123_pipelines.assets import pool_name
from b123_pipelines.connectors import CONNECTORS


def pool_limits() -> dict[str, int]:
    """Pool → the number of updates of its system that may run at once."""
    return {pool_name(system): connector.budget.updates_at_once for system, connector in CONNECTORS.items()}


def apply_pool_limits(instance: DagsterInstance, only_unset: bool = False) -> dict[str, int]:
    """Sets every system's pool limit where it differs (with `only_unset`, only where the pool has no
    limit of its own); returns the pools it changed and their limits.

    Returns nothing on storage without pools (Dagster's in-memory instance)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    current = {pool.name: (pool.limit, pool.from_default) for pool in storage.get_pool_limits()}
    changed = {}
    for pool, limit in pool_limits().items():
        # A limit that came from `default_limit` is the instance's, not ours: make it ours.
        unset = pool not in current or current[pool][1]
        if (unset or not only_unset) and current.get(pool) != (limit, False):
            storage.set_concurrency_slots(pool, limit)
            changed[pool] = limit
    return changed


def main() -> int:
    """`python -m b123_pipelines.pools`: applies the limits to the instance in DAGSTER_HOME."""
    instance = DagsterInstance.get()
    try:
        if not instance.event_log_storage.supports_global_concurrency_limits:
            print(f"The Dagster instance at {instance.root_directory} has no pools (its storage does not "
                  "support them); nothing set.", file=sys.stderr)
            return 1
        changed = apply_pool_limits(instance)
        for pool, limit in pool_limits().items():
            print(f"{pool}: {limit} update(s) at once" + (" (set now)" if pool in changed else " (already so)"))
    finally:
        instance.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
