"""When an update starts without the data team: first logins of the day and refresh requests.

The rules, from budget123's manual and product:
- First login: a login starts one update of its tenant when it is the user's first login of the day
  in the tenant's time zone, the user's auto-refresh setting is on, the user's role may fetch
  accounting figures, and the tenant is enabled, on a cloud system, not waiting for new
  credentials, not updated successfully since its local midnight, not already updating, and not
  backing off. Many logins of one tenant make one update.
- Back-off: after BACKOFF_AFTER consecutive failed updates, automatic triggers wait
  2^(failures - BACKOFF_AFTER) hours (at most MAX_BACKOFF) after the last failure before they try
  again. Refresh requests (the user's button) are not held back.
- Refresh request: served when the user's role may fetch figures and the tenant is enabled and not
  waiting for new credentials (on-premise tenants too); joins an update already queued or running.

Each tick asks the database a fixed number of set-based queries, whatever the number of logins.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import sqlalchemy as sa

from b123_pipelines import tables as t
from b123_pipelines.connectors import CONNECTORS
from b123_pipelines.db import utc
from b123_pipelines.errors import system_label

BACKOFF_AFTER = 3
MAX_BACKOFF = dt.timedelta(hours=24)
LOGINS_PER_TICK = 50_000


@dataclass(frozen=True)
class Start:
    """An update to start."""

    tenant_id: str
    system: str
    trigger: str
    user_id: str
    request_id: int | None = None


@dataclass
class LoginDecision:
    starts: list[Start] = field(default_factory=list)
    cursor: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def local_midnight(at: dt.datetime, timezone: str) -> dt.datetime:
    """The start of `at`'s day in `timezone`, as a UTC instant."""
    local = at.astimezone(_zone(timezone))
    midnight = dt.datetime.combine(local.date(), dt.time(), tzinfo=_zone(timezone))
    return midnight.astimezone(dt.timezone.utc)


def backing_off(consecutive_failures: int, last_failure_at: dt.datetime | None, now: dt.datetime) -> bool:
    if consecutive_failures < BACKOFF_AFTER or last_failure_at is None:
        return False
    wait = min(dt.timedelta(hours=2 ** (consecutive_failures - BACKOFF_AFTER)), MAX_BACKOFF)
    return now < utc(last_failure_at) + wait


def _new_logins(conn, cursor: int):
    lg, u, r, tn = t.user_logins.c, t.users.c, t.roles.c, t.tenants.c
    return conn.execute(
        sa.select(lg.login_id, lg.user_id, lg.tenant_id, lg.logged_in_at, u.auto_refresh,
                  r.can_fetch_figures, tn.system, tn.timezone, tn.enabled, tn.awaiting_credentials)
        .select_from(t.user_logins.join(t.tenants, tn.tenant_id == lg.tenant_id)
                     .outerjoin(t.users, sa.and_(u.user_id == lg.user_id, u.tenant_id == lg.tenant_id))
                     .outerjoin(t.roles, r.role == u.role))
        .where(lg.login_id > cursor).order_by(lg.login_id).limit(LOGINS_PER_TICK)
    ).all()


def _ineligible(login) -> str | None:
    if not login.auto_refresh:
        return "auto-refresh off"
    if not login.can_fetch_figures:
        return "role may not fetch figures"
    if not login.enabled:
        return "tenant disabled"
    if login.system not in CONNECTORS or not CONNECTORS[login.system].cloud:
        return "not a cloud system"
    if login.awaiting_credentials:
        return "waiting for new credentials"
    return None


def first_login_starts(conn, cursor: int, in_flight: set[str], now: dt.datetime) -> LoginDecision:
    decision = LoginDecision(cursor=cursor)
    logins = _new_logins(conn, cursor)
    if not logins:
        return decision
    decision.cursor = logins[-1].login_id
    candidates = []
    for login in logins:
        reason = _ineligible(login)
        if reason:
            decision.skipped[reason] += 1
        else:
            candidates.append((login, local_midnight(utc(login.logged_in_at), login.timezone)))
    if not candidates:
        return decision
    since = min(midnight for _, midnight in candidates)
    earlier = _logins_since(conn, since, decision.cursor)
    succeeded = _successes_since(conn, since)
    backoff = _failing(conn)
    started: set[str] = set()
    for login, midnight in candidates:
        at = utc(login.logged_in_at)
        reason = (
            "login from an earlier day" if midnight < local_midnight(now, login.timezone)
            else "not the user's first login today" if _logged_in_before(earlier.get(login.user_id, ()), login, midnight, at)
            else "already updated today" if succeeded.get(login.tenant_id, midnight) > midnight
            else "update already queued or running" if login.tenant_id in in_flight or login.tenant_id in started
            else "backing off after failures" if login.tenant_id in backoff and backing_off(*backoff[login.tenant_id], now)
            else None
        )
        if reason:
            decision.skipped[reason] += 1
            continue
        started.add(login.tenant_id)
        decision.starts.append(Start(login.tenant_id, login.system, "first_login", login.user_id))
    return decision


def _logins_since(conn, since: dt.datetime, up_to: int) -> dict[str, list[tuple[dt.datetime, int]]]:
    lg = t.user_logins.c
    by_user = defaultdict(list)
    for user_id, at, login_id in conn.execute(
        sa.select(lg.user_id, lg.logged_in_at, lg.login_id).where(lg.logged_in_at >= since, lg.login_id <= up_to)
    ):
        by_user[user_id].append((utc(at), login_id))
    return by_user


def _logged_in_before(times, login, midnight: dt.datetime, at: dt.datetime) -> bool:
    return any(midnight <= other < at or (other == at and other_id < login.login_id)
               for other, other_id in times)


def _successes_since(conn, since: dt.datetime) -> dict[str, dt.datetime]:
    runs = t.sync_runs.c
    return {tenant: utc(at) for tenant, at in conn.execute(
        sa.select(runs.tenant_id, sa.func.max(runs.finished_at))
        .where(runs.status == "succeeded", runs.finished_at >= since).group_by(runs.tenant_id))}


def _failing(conn) -> dict[str, tuple[int, dt.datetime]]:
    health = t.sync_health.c
    return {r.tenant_id: (r.consecutive_failures, r.last_failure_at) for r in conn.execute(
        sa.select(t.sync_health).where(health.consecutive_failures >= BACKOFF_AFTER))}


# ---------------------------------------------------------------- refresh requests
@dataclass
class RequestDecision:
    starts: list[Start] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)  # request_id, state, reason, run_id


def _refusal(request, locale: str) -> str | None:
    da = locale == "da"
    if request.system is None:
        return "Ukendt kunde." if da else "Unknown tenant."
    if request.role is None:
        return ("Brugeren hører ikke til denne kunde." if da else "The user does not belong to this tenant.")
    if not request.can_fetch_figures:
        return ("Din rolle giver ikke ret til at hente regnskabstal." if da
                else "Your role does not allow fetching accounting figures.")
    if not request.enabled:
        return "Kunden er deaktiveret." if da else "The tenant is disabled."
    if request.system not in CONNECTORS:
        return (f"{system_label(request.system)} kan endnu ikke opdateres herfra." if da
                else f"{system_label(request.system)} cannot be updated from here yet.")
    if request.awaiting_credentials:
        return ("Regnskabssystemet afviste adgangen; der skal hentes ny adgang (for e-conomic: Globale "
                "indstillinger >> Integrationsindstillinger >> Indhent automatisk ny token)." if da else
                "The accounting system refused access; new credentials are needed (for e-conomic: Global "
                "settings >> Integration settings >> Fetch new token automatically).")
    return None


def refresh_starts(conn, in_flight: dict[str, tuple[str, str]]) -> RequestDecision:
    """`in_flight`: tenant → (run_id, 'queued' | 'running') of its update under way."""
    rq, u, r, tn = t.sync_requests.c, t.users.c, t.roles.c, t.tenants.c
    requests = conn.execute(
        sa.select(rq.request_id, rq.tenant_id, rq.user_id, u.role, r.can_fetch_figures, tn.system,
                  tn.enabled, tn.awaiting_credentials, tn.locale)
        .select_from(t.sync_requests.outerjoin(t.tenants, tn.tenant_id == rq.tenant_id)
                     .outerjoin(t.users, sa.and_(u.user_id == rq.user_id, u.tenant_id == rq.tenant_id))
                     .outerjoin(t.roles, r.role == u.role))
        .where(rq.state == "new").order_by(rq.request_id)
    ).all()
    if requests and in_flight:
        # A run whose sync_runs row is closed has already fetched and closed its requests, though
        # Dagster may not have marked it finished yet: joining it would leave the request unserved.
        runs = t.sync_runs.c
        closed = set(conn.execute(sa.select(runs.run_id).where(
            runs.run_id.in_([run_id for run_id, _ in in_flight.values()]), runs.status != "running")).scalars())
        in_flight = {tenant: run for tenant, run in in_flight.items() if run[0] not in closed}
    decision = RequestDecision()
    started: set[str] = set()
    for request in requests:
        refusal = _refusal(request, request.locale or "da")
        if refusal:
            decision.updates.append(dict(request_id=request.request_id, state="refused", reason=refusal, run_id=None))
        elif request.tenant_id in in_flight:
            run_id, state = in_flight[request.tenant_id]
            decision.updates.append(dict(request_id=request.request_id, state=state, reason=None, run_id=run_id))
        else:
            # Queued without a run id: the update that opens next for this tenant serves it.
            decision.updates.append(dict(request_id=request.request_id, state="queued", reason=None, run_id=None))
            if request.tenant_id not in started:
                started.add(request.tenant_id)
                decision.starts.append(Start(request.tenant_id, request.system, "refresh_request",
                                             request.user_id, request.request_id))
    return decision


def apply_request_updates(conn, updates: list[dict]) -> None:
    rq = t.sync_requests.c
    for update in updates:
        conn.execute(t.sync_requests.update().where(rq.request_id == update["request_id"], rq.state == "new")
                     .values(state=update["state"], reason=update["reason"], run_id=update["run_id"]))
