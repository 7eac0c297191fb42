"""What the connection doctor found, one `Finding` per check, in Danish and English.

A connector's `diagnose()` returns its system's checklist as findings (on-premise: the manual's
checklist; cloud systems: the credentials work, and what they offer beside, such as entries waiting
in a draft journal). The default, `standard_findings`, is built on `check_access()`; a system extends
it. The doctor (`b123_pipelines/doctor.py`) prints them, the daily health job records them, and a
failed update appends the first failing one to its message.

Texts come in both locales the app knows. Where a finding carries a connector's error (SyncError),
its words are the error's own, which are English in every locale, like every failure message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from b123_pipelines.errors import SyncError

if TYPE_CHECKING:
    from b123_pipelines.connectors.base import Connector

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class T:
    """A text in Danish and English."""

    da: str
    en: str

    def __call__(self, locale: str) -> str:
        return self.da if locale == "da" else self.en

    @classmethod
    def same(cls, text: str) -> "T":
        return cls(text, text)


@dataclass(frozen=True)
class Finding:
    """One check of the connection: what was checked, how it went and, when not well, what to do.

    `status`: ok; warn (worth knowing, nothing is broken yet); fail (an update fails or will fail
    on it); skip (not checked, because an earlier check failed). `credentials`: True when the check
    proves the stored credentials work, False when it proves they are refused, None otherwise.
    """

    check: str  # stable id, e.g. "access", "onprem.clock"
    status: str
    subject: T  # what was checked
    result: T  # what was found
    action: T | None = None  # what to do, when something is to be done
    credentials: bool | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def text(self, locale: str) -> str:
        """'The agent's clock: 7 minutes ahead of budget123's. What to do: ...'"""
        out = f"{self.subject(locale)}: {self.result(locale)}"
        if self.action is not None:
            out += ("" if out.endswith((".", "!", "?")) else ".") + (
                " Gør dette: " if locale == "da" else " What to do: ") + self.action(locale)
        return out


def from_error(check: str, subject: T, exc: SyncError) -> Finding:
    """A failed check whose cause is a connector's explained error."""
    return Finding(check, FAIL, subject, T.same(exc.problem), T.same(exc.action) if exc.action else None,
                   credentials=False if exc.needs_new_credentials else None)


def skipped(check: str, subject: T, because: T) -> Finding:
    return Finding(check, SKIP, subject, because)


def access_subject(label: str) -> T:
    return T(f"Adgang til {label} med de gemte adgangsoplysninger",
             f"Access to {label} with the stored credentials")


def standard_findings(connector: "Connector", quick: bool = False) -> list[Finding]:
    """Every system's basic checklist: the credentials work; and, where the system lists draft
    lines, how many entries wait in a draft journal (not a fault: they come over once posted).

    Quick (a failed update's verdict): nothing. A cloud system's failed update has already said
    what its access check would, and asking again would spend the tenant's API budget (Uniconta's
    calls a day) for the same answer."""
    if quick:
        return []
    subject = access_subject(connector.label)
    try:
        connector.check_access()
    except SyncError as exc:
        return [from_error("access", subject, exc)]
    findings = [Finding("access", OK, subject, T("virker", "they work"), credentials=True)]
    if connector.capabilities.draft_lines:
        findings.append(draft_finding(lambda: sum(1 for _ in connector.draft_lines())))
    return findings


def draft_finding(count_waiting: Callable[[], int]) -> Finding:
    """How many entries wait in draft journals: not a fault, since budget123 fetches posted entries
    only (the manual's note on kassekladde), but the answer to "where are my last entries?"."""
    subject = T("Kladder (kassekladde)", "Draft journals")
    try:
        waiting = count_waiting()
    except SyncError as exc:
        return Finding("drafts", WARN, subject, T(f"kunne ikke tælles ({exc.problem})",
                                                 f"could not be counted ({exc.problem})"))
    if not waiting:
        return Finding("drafts", OK, subject, T("ingen posteringer venter i en kladde",
                                                "no entries wait in a draft journal"))
    da = ("1 postering ligger i en kladde og kommer med, når den er bogført" if waiting == 1 else
          f"{waiting} posteringer ligger i en kladde og kommer med, når de er bogført")
    en = ("1 entry is in a draft journal and comes over once posted" if waiting == 1 else
          f"{waiting} entries are in a draft journal and come over once posted")
    return Finding("drafts", OK, subject, T(f"{da} (budget123 henter kun bogførte posteringer)",
                                            f"{en} (budget123 fetches posted entries only)"))


__all__ = ["FAIL", "Finding", "OK", "SKIP", "T", "WARN", "access_subject", "draft_finding", "from_error",
           "skipped", "standard_findings"]
