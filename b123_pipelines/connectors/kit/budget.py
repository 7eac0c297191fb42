"""An accounting system's API budget, and the limiter that keeps one tenant's calls within it.

Every budget we know of is counted per agreement, app registration or user, which for us means per
tenant: e-conomic 10,000 calls a minute and 50,000 a day per agreement, Business Central 6,000
requests per 5 minutes and 100 at once per app, Uniconta 5,000 calls a day per user. So there is one
limiter per (system, tenant) in a process, shared by everything that calls for that tenant.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiBudget:
    calls_per_window: int
    window_seconds: float
    concurrent_calls: int
    calls_per_day: int | None = None  # the vendor's daily quota; budget123 spends at most DAILY_SHARE
    #: Updates of this system that may run at once on one Dagster instance: the `<system>_api`
    #: pool's limit. Each update spends its own tenant's budget, so this bounds our side (workers,
    #: warehouse connections), not the vendor's.
    updates_at_once: int = 4


#: A daily quota counts the customer's own use of the same API user too (Uniconta: per user): an
#: update that spent all of it would lock the customer out until tomorrow, so budget123 keeps a
#: fifth of it free.
DAILY_SHARE = 0.8


def daily_allowance(budget: ApiBudget, spent_today: int) -> int | None:
    """Calls one more update may make today, or None where the system has no daily quota."""
    if budget.calls_per_day is None:
        return None
    return max(0, int(budget.calls_per_day * DAILY_SHARE) - spent_today)


class RateLimiter:
    """At most `calls_per_window` calls in any window, `concurrent_calls` at once; counts calls."""

    def __init__(self, budget: ApiBudget):
        self.budget = budget
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(budget.concurrent_calls)
        self.calls = 0

    def __enter__(self) -> "RateLimiter":
        self._slots.acquire()
        try:
            self._take()
        except BaseException:
            self._slots.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._slots.release()

    def _take(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._recent and now - self._recent[0] >= self.budget.window_seconds:
                    self._recent.popleft()
                if len(self._recent) < self.budget.calls_per_window:
                    self._recent.append(now)
                    self.calls += 1
                    return
                wait = self.budget.window_seconds - (now - self._recent[0])
            time.sleep(min(wait, 1.0))


_limiters: dict[tuple[str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(system: str, tenant_id: str, budget: ApiBudget) -> RateLimiter:
    with _limiters_lock:
        limiter = _limiters.get((system, tenant_id))
        if limiter is None or limiter.budget != budget:
            limiter = _limiters[(system, tenant_id)] = RateLimiter(budget)
        return limiter
