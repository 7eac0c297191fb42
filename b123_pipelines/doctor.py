"""The connection doctor: the manual's checklist for one tenant, one line per check.

    b123 doctor TENANT       # exit 0 all ok, 1 something to fix, 2 bad input

Each system says what it can check (`Connector.diagnose()`, findings in connectors/findings.py):
on-premise, the agent on its port (refused = the service is stopped, no answer = a firewall, another
answer = another service holds the port), the shared key, the clock, the licence, a password on the
accounting file, the database's place, a message at login, the integration's user, customisations;
cloud systems, that the credentials work, and how many entries wait in a draft journal. Lines are in
the tenant's locale (da or en).

The same checks run in three places: here (the command), in the daily `credential_health` job
(sensors.py), which records the verdict where the app reads it (`credential_checks`), and when an
update fails (update.py): its message gets the first failing finding, from a quick diagnosis
bounded in time, when that adds something to what the error already said.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.engine import Engine

from b123_pipelines import status
from b123_pipelines.connectors.base import Connector
from b123_pipelines.connectors.kit.budget import DAILY_SHARE, daily_allowance
from b123_pipelines.db import now
from b123_pipelines.triggers import local_midnight
from b123_pipelines.connectors.findings import FAIL, OK, SKIP, WARN, Finding, T, from_error
from b123_pipelines.errors import SyncError, system_label
from b123_pipelines.tenants import Tenant
from b123_pipelines.vault import VaultError

# The doctor asks once and briefly: a check that would wait a minute of retries helps no one.
DOCTOR_HTTP = {"timeout": 15.0, "deadline": 60.0, "retries": 1, "backoff": 0.5, "connect_timeout": 5.0}
VERDICT_HTTP = {"timeout": 5.0, "deadline": 10.0, "retries": 0, "connect_timeout": 3.0}
VERDICT_SECONDS = 20.0  # at most this much is added to a failed update for its verdict

MARKS = {OK: ("ok", "ok"), WARN: ("OBS", "NOTE"), FAIL: ("FEJL", "FAIL"), SKIP: ("-", "-")}


@dataclass
class Report:
    tenant: Tenant
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.findings)

    @property
    def first_failure(self) -> Finding | None:
        return next((f for f in self.findings if f.failed), None)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        locale = self.tenant.locale
        title = T(f"Forbindelsestjek for '{self.tenant.tenant_id}' ({self.tenant.name}, "
                  f"{system_label(self.tenant.system)}):",
                  f"Connection doctor for '{self.tenant.tenant_id}' ({self.tenant.name}, "
                  f"{system_label(self.tenant.system)}):")
        width = max(len(m[0 if locale == "da" else 1]) for m in MARKS.values())
        out = [title(locale)]
        for finding in self.findings:
            mark = MARKS[finding.status][0 if locale == "da" else 1]
            out.append(f"  {mark:<{width}}  {finding.text(locale)}")
        out.append(verdict_line(self, locale))
        return out


def verdict_line(report: Report, locale: str) -> str:
    failing = sum(1 for f in report.findings if f.failed)
    if not failing:
        return T("Alt er i orden.", "All is well.")(locale)
    return T(f"{failing} ting skal rettes (se FEJL ovenfor).",
             f"{failing} thing(s) to fix (see FAIL above).")(locale)


def examine(engine: Engine, tenant: Tenant, open_connector: Callable[[Engine, Tenant], Connector],
            quick: bool = False) -> Report:
    """Runs the tenant's system's checklist. A connection that cannot even be opened (settings
    missing or invalid, the secret key changed) is itself the finding."""
    subject = T("Forbindelsen, budget123 har gemt", "The connection stored in budget123")
    try:
        connector = open_connector(engine, tenant)
    except SyncError as exc:
        return Report(tenant, [from_error("connection", subject, exc)])
    except VaultError as exc:
        return Report(tenant, [Finding("connection", FAIL, subject, T.same(str(exc)))])
    try:
        findings = connector.diagnose(quick=quick)
    except SyncError as exc:  # a system's diagnosis that did not turn an error into a finding
        findings = [from_error("access", subject, exc)]
    finally:
        connector.close()
    if connector.budget.calls_per_day and not quick:
        findings.append(calls_left_today(engine, tenant, connector))
    return Report(tenant, findings)


def calls_left_today(engine: Engine, tenant: Tenant, connector: Connector) -> Finding:
    """How much of budget123's share of the daily call quota is left (Uniconta: per user a day),
    by what today's updates spent (sync_runs.api_calls)."""
    spent = status.calls_since(engine, tenant.tenant_id, local_midnight(now(), tenant.timezone))
    left = daily_allowance(connector.budget, spent)
    share = int(connector.budget.calls_per_day * DAILY_SHARE)
    subject = T("API-kald tilbage i dag", "API calls left today")
    detail = T(f"{left:,} af budget123's {share:,} (kvoten er {connector.budget.calls_per_day:,} om dagen)",
               f"{left:,} of budget123's {share:,} (the quota is {connector.budget.calls_per_day:,} a day)")
    if left:
        return Finding("calls_left", OK, subject, detail)
    return Finding("calls_left", FAIL, subject, detail,
                   T("Opdateringer venter til i morgen; køb flere kald hos leverandøren, hvis det sker tit.",
                     "Updates wait until tomorrow; buy more calls from the vendor if this happens often."))


def with_verdict(error: SyncError, connector: Connector | None, locale: str) -> str:
    """A failed update's message, with the doctor's first failing finding added when it says
    something the error did not: a quick diagnosis on a fresh connection with short timeouts and no
    retries, given at most VERDICT_SECONDS. Never raises; the message stands on its own."""
    message = error.message
    if connector is None:
        return message
    found: list[Finding | None] = []

    def diagnose() -> None:
        quick = None
        try:
            quick = type(connector)(tenant_id=connector.tenant_id, settings=connector.settings,
                                    http={**connector.http, **VERDICT_HTTP})
            found.append(next((f for f in quick.diagnose(quick=True) if f.failed), None))
        except Exception:  # the doctor must never hide the update's own error
            found.append(None)
        finally:
            if quick is not None:
                quick.close()

    worker = threading.Thread(target=diagnose, name="doctor-verdict", daemon=True)
    worker.start()
    worker.join(VERDICT_SECONDS)
    finding = found[0] if found else None
    if finding is None or _already_said(error, finding):
        return message
    prefix = T("Forbindelsestjek", "Connection doctor")(locale)
    return f"{message} {prefix}: {finding.text(locale)}"


def _already_said(error: SyncError, finding: Finding) -> bool:
    own = getattr(error, "finding", None)
    if own is not None and own.check == finding.check:
        return True
    return finding.result.en in error.message


__all__ = ["DOCTOR_HTTP", "Report", "examine", "verdict_line", "with_verdict"]
