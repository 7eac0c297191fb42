"""On-premise accounting systems (Dynamics C5, NAV on-premise, ...) through budget123's agent,
DataQueryService, a Windows service beside the accounting system that budget123 reaches on port 2103.

The protocol is ours (docs/dataqueryservice-protocol.md): JSON over HTTPS, GET only, every request
signed with the shared key, a timestamp and a nonce (kit `SignedRequestAuth`); the agent refuses a
request outside its time window (why its computer's clock must be right) or one it has seen (a
replay). The key itself never travels. Every answer names the agent (`X-DQS-Agent`), and every
answer to an accepted request proves the agent holds the key (`X-DQS-Proof`), so something else on
port 2103 (Windows Message Queuing uses it too) is told apart from the agent.

Incremental: the agent numbers posted entries in posting order (`entry`: C5's RecId, NAV's Entry
No.), so the cursor is the highest number loaded and an entry posted later with an earlier date
(back-dated) is still after it. Pages by keyset (`$filter=entry gt N`). Drafts are listed apart
(capability draft_lines) and never among the entries.

Everything the manual's checklist names is said in plain words, in one table (`PROBLEMS`) that the
update's failure message and the connection doctor (`diagnose`) share: the agent not running
(connection refused), port 2103 dropped by a firewall (no answer), another service on the port, the
clock, the licence, a password on the accounting file, a moved database, a message at login, the
integration's user missing, customised tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import math
import re
import socket
import ssl
import unicodedata
from decimal import InvalidOperation
from typing import Annotated, Any, Iterator
from urllib.parse import quote

import requests
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from b123_pipelines.connectors.base import (
    Account, Capabilities, Connector, DimensionValue, DraftLine, Entry, EntryPage, money, whole_number,
)
from b123_pipelines.connectors.findings import FAIL, OK, SKIP, WARN, Finding, T, draft_finding, from_error
from b123_pipelines.connectors.kit.auth import SIGNATURE_HEADERS, SignedRequestAuth
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import Keyset
from b123_pipelines.connectors.kit.transport import HttpStatusError, TransportError
from b123_pipelines.errors import SyncError

DEFAULT_PORT = 2103
PAGE_SIZE = 1000
CONNECT_TIMEOUT = 3.0  # seconds: a port a firewall drops fails fast; the agent is on the customer's LAN or VPN
PROBE_READ_TIMEOUT = 5.0
AGENT_RETRIES = 2  # a stopped agent or a closed port does not come back within a minute of retries
AGENT_HEADER, PROOF_HEADER = "X-DQS-Agent", "X-DQS-Proof"
CLOCK_WARN_SECONDS = 60
LICENCE_WARN_DAYS = 14
API = "/v1"

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _host(value: str) -> str:
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(text):
        raise ValueError("must be the agent's host name or IP address alone (e.g. 'regnskab.local' or "
                         "'10.0.0.5'), without https://, port or path")
    return text.lower()


def _usable_key(value: SecretStr) -> SecretStr:
    # The messages never show the value: it is a secret.
    text = value.get_secret_value()
    if len(text.strip()) < 16:
        raise ValueError("must be the whole shared key DQS Admin shows (at least 16 characters)")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise ValueError("contains a control character (a line break, tab or the like); give the key without it")
    return value


class OnPremSettings(BaseModel):
    """`{"host": "regnskab.local", "port": 2103, "shared_key": "..."}`"""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, AfterValidator(_host)]
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    shared_key: Annotated[SecretStr, AfterValidator(_usable_key)]


# ---------------------------------------------------------------------------------------------------
# The manual's checklist, in plain words: check -> (what is checked, what went wrong, what to do).
# Placeholders are filled from what the agent or the probe said.
SUBJECTS = {
    "onprem.port": T("Agenten svarer på {where}", "The agent answers on {where}"),
    "onprem.key": T("Den delte nøgle", "The shared key"),
    "onprem.clock": T("Uret på agentens computer", "The clock on the agent's computer"),
    "onprem.database": T("Regnskabets database", "The accounting database"),
    "onprem.password": T("Password på regnskabsfilen", "A password on the accounting file"),
    "onprem.licence": T("Regnskabssystemets licens", "The accounting system's licence"),
    "onprem.login_message": T("Besked ved login", "A message at login"),
    "onprem.user": T("Integrationens bruger i regnskabssystemet", "The integration's user in the accounting system"),
    "onprem.customised": T("Tilretninger af regnskabssystemet", "Customisations of the accounting system"),
    "drafts": T("Kladder (kassekladde)", "Draft journals"),
}
CHECKS = tuple(SUBJECTS)

PROBLEMS: dict[str, tuple[str, T, T]] = {
    "stopped": ("onprem.port", T(
        "forbindelsen blev afvist: DataQueryService kører ikke.",
        "the connection was refused: DataQueryService is not running."), T(
        "Åbn DQS Admin (under Programmer) på den server/computer, hvor regnskabssystemet er installeret, "
        "og start servicen på start-knappen; opdatér derefter igen.",
        "On the server or computer that runs the accounting system, open DQS Admin (under Programs) and "
        "start the service with its Start button; then update again.")),
    "dropped": ("onprem.port", T(
        "intet svar inden for {seconds} sekunder: forbindelsen forsvinder undervejs, som når en firewall "
        "blokerer port {port}.",
        "no answer within {seconds} seconds: the connection is silently dropped on the way, as a firewall "
        "that blocks port {port} does."), T(
        "Åbn port {port} i firewallen (udgående trafik fra budget123 til agentens computer, og indgående "
        "på den computer); opdatér derefter igen.",
        "Open port {port} in the firewall (outgoing from budget123 to the agent's computer, and incoming "
        "on that computer); then update again.")),
    "silent": ("onprem.port", T(
        "forbindelsen blev taget imod, men intet svar kom inden for {seconds} sekunder: agenten hænger, "
        "eller et andet program holder porten.",
        "the connection was accepted but nothing answered within {seconds} seconds: the agent hangs, or "
        "another program holds the port."), T(
        "Genstart servicen i DQS Admin; hjælper det ikke, så find programmet, der holder port {port} "
        "('netstat -abno' som administrator).",
        "Restart the service in DQS Admin; if that does not help, find the program holding port {port} "
        "('netstat -abno' as an administrator).")),
    "port_held": ("onprem.port", T(
        "noget andet end DataQueryService svarer på porten ({what}). Windows Message Queuing (MSMQ) "
        "bruger også port 2103 og kan holde den.",
        "something other than DataQueryService answers on that port ({what}). Windows Message Queuing "
        "(MSMQ) also uses port 2103 and may hold it."), T(
        "Find programmet, der holder port {port}, på agentens computer ('netstat -abno' som "
        "administrator). Stop Message Queuing, hvis den ikke bruges, eller giv DataQueryService en anden "
        "port i DQS Admin og gem den port i budget123's forbindelse; opdatér derefter igen.",
        "On the agent's computer, find the program holding port {port} ('netstat -abno' as an "
        "administrator). Stop Message Queuing if it is not needed, or give DataQueryService another port "
        "in DQS Admin and store that port in budget123's connection; then update again.")),
    "unknown_host": ("onprem.port", T(
        "værtsnavnet {host} kendes ikke (DNS).", "the host name {host} is not known (DNS)."), T(
        "Ret værtsnavnet i kundens forbindelse ('b123 tenant credentials'); har I fået ny server, så "
        "angiv den nye.",
        "Correct the host in the tenant's connection ('b123 tenant credentials'); if the books moved to a "
        "new server, give the new one.")),
    "unreachable": ("onprem.port", T(
        "forbindelsen kunne ikke oprettes ({reason}).", "no connection could be made ({reason})."), T(
        "Tjek, at agentens computer er tændt og på netværket, og at værtsnavnet i forbindelsen er rigtigt; "
        "opdatér derefter igen.",
        "Check that the agent's computer is on and on the network, and that the host in the connection is "
        "right; then update again.")),
    "certificate": ("onprem.port", T(
        "agenten svarer med et TLS-certifikat, som budget123 ikke stoler på ({reason}).",
        "the agent answers with a TLS certificate budget123 does not trust ({reason})."), T(
        "Dataholdet skal installere certifikatet, som DQS Admin viser, i budget123's tillidslager; "
        "opdatér derefter igen.",
        "The data team must add the certificate DQS Admin shows to budget123's trust store; then update "
        "again.")),
    "bad_signature": ("onprem.key", T(
        "agenten afviste budget123's signatur: nøglen, budget123 har gemt, er ikke agentens.",
        "the agent refused budget123's signature: the key stored in budget123 is not the agent's."), T(
        "Kopiér nøglen, som DQS Admin viser, og gem den som forbindelsens shared_key ('b123 tenant "
        "credentials'); opdatér derefter igen.",
        "Copy the key DQS Admin shows and store it as the connection's shared_key ('b123 tenant "
        "credentials'); then update again.")),
    "clock_skew": ("onprem.clock", T(
        "agentens ur går {minutes} minutter {direction_da} (højst {window} minutter accepteres), så "
        "agenten afviser alle forespørgsler: de er underskrevet med tidspunktet, mod genafspilning.",
        "the agent's clock is {minutes} minutes {direction_en} (at most {window} minutes are accepted), so "
        "the agent refuses every request: requests are signed with the time, against replays."), T(
        "Stil uret på den computer, hvor DataQueryService er installeret (Windows: Indstillinger > Tid og "
        "sprog > Indstil klokkeslæt automatisk); opdatér derefter igen.",
        "Set the clock on the computer where DataQueryService runs (Windows: Settings > Time & language > "
        "Set time automatically); then update again.")),
    "replayed": ("onprem.key", T(
        "agenten afviste en forespørgsel som en, den havde set før (genafspilning).",
        "the agent refused a request as one it had seen before (a replay)."), T(
        "Opdatér igen; sker det igen, skal dataholdet se på forbindelsen (noget mellem budget123 og "
        "agenten gentager forespørgsler).",
        "Update again; if it happens again, the data team must look at the connection (something between "
        "budget123 and the agent repeats requests).")),
    "database_missing": ("onprem.database", T(
        "agenten finder ingen regnskabsdatabase i {path}: databasen eller dens filer er flyttet (eller "
        "regnskabet ligger nu på en ny server).",
        "the agent finds no accounting database at {path}: the database or its files were moved (or the "
        "books now live on a new server)."), T(
        "Peg DataQueryService på databasens nye placering i DQS Admin (eller installér agenten på den nye "
        "server); opdatér derefter igen.",
        "Point DataQueryService at the database's new place in DQS Admin (or install the agent on the new "
        "server); then update again.")),
    "file_password": ("onprem.password", T(
        "regnskabsfilen har et password, så agenten kan ikke åbne den.",
        "the accounting file has a password, so the agent cannot open it."), T(
        "Fjern passwordet på regnskabsfilen, eller angiv det i DQS Admin; opdatér derefter igen.",
        "Remove the password on the accounting file, or enter it in DQS Admin; then update again.")),
    "licence_expired": ("onprem.licence", T(
        "licensen til {product} udløb {expires}, så regnskabet kan ikke læses.",
        "the licence of {product} expired on {expires}, so the books cannot be read."), T(
        "Forny licensen hos regnskabssystemets leverandør eller forhandler; opdatér derefter igen.",
        "Renew the licence with the accounting system's vendor or dealer; then update again.")),
    "login_message": ("onprem.login_message", T(
        "{product} viser en besked, så snart man logger ind (\"{text}\"), og den stopper agentens login.",
        "{product} shows a message as soon as one logs in (\"{text}\"), which stops the agent's login."), T(
        "Log ind i regnskabssystemet som integrationens bruger, læs og luk beskeden (eller slå den fra); "
        "opdatér derefter igen.",
        "Log in to the accounting system as the integration's user, read and close the message (or turn it "
        "off); then update again.")),
    "integration_user_missing": ("onprem.user", T(
        "regnskabssystemet har {count} bruger(e), og integrationens bruger {user} er ikke blandt dem.",
        "the accounting system has {count} user(s), and the integration's user {user} is not among them."), T(
        "Opret brugeren {user} i regnskabssystemet, eller vælg en eksisterende bruger i DQS Admin; "
        "opdatér derefter igen.",
        "Create the user {user} in the accounting system, or choose an existing user in DQS Admin; then "
        "update again.")),
    "schema_customised": ("onprem.customised", T(
        "regnskabssystemets tabeller er tilrettet i forhold til standarden ({differences}), og agenten kan "
        "ikke læse dem.",
        "the accounting system's tables were customised away from the standard ({differences}), and the "
        "agent cannot read them."), T(
        "Fortæl budget123's support, hvilke tilretninger der er lavet siden sidste gode opdatering; "
        "agentens tabelopsætning skal tilpasses i DQS Admin.",
        "Tell budget123's support which customisations were made since the last good update; the agent's "
        "table mapping must be adjusted in DQS Admin.")),
}
# Entry's text fields from the protocol's names for them (docs/dataqueryservice-protocol.md).
ENTRY_TEXTS = {"voucher": "voucher", "text": "text", "entry_type": "type", "dimension_1": "dimension_1",
               "dimension_2": "dimension_2", "dimension_3": "dimension_3"}
BLOCKING_ORDER = ("database_missing", "file_password", "licence_expired", "login_message",
                  "integration_user_missing", "schema_customised")


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _fill(text: T, values: dict) -> T:
    return T(text.da.format_map(_Blank(values)), text.en.format_map(_Blank(values)))


class AgentProblem(SyncError):
    """An update stopped on one of the manual's checklist items; `finding` says it for the doctor."""

    def __init__(self, tenant_id: str, system: str, finding: Finding, where: str):
        self.finding = finding
        self.needs_new_credentials = finding.credentials is False
        super().__init__(tenant_id, system, f"DataQueryService at {where}: {finding.result.en}",
                         finding.action.en if finding.action else "")


class NotTheAgent(TransportError):
    """What answered on the agent's port is not DataQueryService (`what` says how it showed)."""

    def __init__(self, what: str):
        super().__init__(f"something other than DataQueryService answers ({what})", temporary=False)
        self.what = what


def response_proof(key: bytes, status: int, nonce: str) -> str:
    """What the agent sends in X-DQS-Proof: HMAC-SHA256 over the status and the request's nonce."""
    message = f"DQS-RESPONSE\n{status}\n{nonce}".encode()
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


class AgentAuth(SignedRequestAuth):
    """Signs each request (the kit's scheme) and refuses an answer that is not the agent's: one
    without X-DQS-Agent, or, to an accepted request, without the proof that it holds the key."""

    def __init__(self, shared_key: SecretStr):
        super().__init__(shared_key)
        self._secret = shared_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request = super().__call__(request)
        request.register_hook("response", self._from_the_agent)
        return request

    def _from_the_agent(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if AGENT_HEADER not in response.headers:
            response.close()
            raise NotTheAgent(_looks_like(response))
        if response.status_code != 401:  # a refusal of our signature cannot be proven to us
            nonce = response.request.headers.get(SIGNATURE_HEADERS[1], "")
            expected = response_proof(self._secret.get_secret_value().encode(), response.status_code, nonce)
            if not hmac.compare_digest(response.headers.get(PROOF_HEADER, ""), expected):
                response.close()
                raise NotTheAgent("it calls itself DataQueryService but cannot prove it holds the shared key")
        return response


def _looks_like(response: requests.Response) -> str:
    server = response.headers.get("Server")
    return f"it answers HTTP {response.status_code}" + (f" as '{server[:60]}'" if server else "") + \
        ", not as DataQueryService"


class OnPremConnector(Connector):
    system = "onprem"
    label = "on-premise (DataQueryService)"
    cloud = False  # updated on request only: never at a first login of the day
    Settings = OnPremSettings
    # One customer's own server: a gentle pace, two requests at once.
    budget = ApiBudget(calls_per_window=600, window_seconds=60, concurrent_calls=2)
    capabilities = Capabilities(draft_lines=True, source_count=True)

    def __post_init__(self) -> None:
        tuning = dict(self.http)
        # Connect fast and retry little: a stopped agent or a dropped port is said within seconds.
        tuning["connect_timeout"] = min(CONNECT_TIMEOUT, tuning.get("connect_timeout") or CONNECT_TIMEOUT)
        tuning["retries"] = min(int(tuning.get("retries", AGENT_RETRIES)), AGENT_RETRIES)
        self.http = tuning
        super().__post_init__()

    # ---------------------------------------------------------------- composition
    @property
    def where(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.settings.port}" if ":" in host else f"{host}:{self.settings.port}"

    def base_url(self) -> str:
        return f"https://{self.where}"

    def auth(self) -> AgentAuth:
        return AgentAuth(self.settings.shared_key)

    def problem(self, code: str, **values: Any) -> AgentProblem:
        return AgentProblem(self.tenant_id, self.system, self.finding(code, **values), self.where)

    def finding(self, code: str, status: str = FAIL, **values: Any) -> Finding:
        check, result, action = PROBLEMS[code]
        values = {"host": self.settings.host, "port": self.settings.port, **values}
        return Finding(check, status, self.subject(check), _fill(result, values), _fill(action, values),
                       credentials=False if code == "bad_signature" else None)

    def subject(self, check: str) -> T:
        return _fill(SUBJECTS[check], {"where": self.where})

    def explain(self, error: HttpStatusError) -> SyncError | None:
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error") if isinstance(body.get("error"), dict) else {}
        code = detail.get("code")
        if code == "clock_skew":
            return self.problem("clock_skew", **_skew_values(detail.get("agent_time"), detail.get("window_seconds")))
        if code in ("bad_signature", "replayed"):
            return self.problem(code)
        if code in BLOCKING_ORDER:
            return self.problem(code, **_refusal_values(detail))
        if error.status == 404:
            return self.bad_data(f"does not know {error.path}: the agent is older than this version of budget123 "
                                 "needs (update DataQueryService).")
        return None

    def explain_transport(self, error: TransportError) -> SyncError | None:
        if isinstance(error, NotTheAgent):
            return self.problem("port_held", what=error.what)
        if error.temporary:
            found = self.reach()  # why did it not answer? refused, dropped, something else
            if found.failed:
                return AgentProblem(self.tenant_id, self.system, found, self.where)
        return None

    # ---------------------------------------------------------------- the port, below HTTP
    def reach(self) -> Finding:
        """One unsigned request, no retries: does DataQueryService answer on the port, and if not,
        why not (refused = not running, no answer = a firewall drops the port, another answer =
        another service holds the port). No credential is sent."""
        seconds = f"{CONNECT_TIMEOUT:g}"
        try:
            response = requests.get(self.base_url() + API + "/status", timeout=(CONNECT_TIMEOUT, PROBE_READ_TIMEOUT),
                                    allow_redirects=False, stream=True)
        except requests.exceptions.ConnectTimeout:
            return self.finding("dropped", seconds=seconds)
        except requests.exceptions.ReadTimeout:
            return self.finding("silent", seconds=f"{PROBE_READ_TIMEOUT:g}")
        except requests.exceptions.SSLError as exc:
            verify = _cause(exc, ssl.SSLCertVerificationError)
            if verify is not None:
                return self.finding("certificate", reason=getattr(verify, "verify_message", None) or "not trusted")
            return self.finding("port_held", what="it does not speak TLS as the agent does")
        except requests.exceptions.ConnectionError as exc:
            if _cause(exc, ConnectionRefusedError) is not None:
                return self.finding("stopped")
            if _cause(exc, socket.gaierror) is not None:
                return self.finding("unknown_host")
            if _cause(exc, TimeoutError) is not None:
                return self.finding("dropped", seconds=seconds)
            if _cause(exc, OSError) is not None and "reset" not in str(exc).lower():
                return self.finding("unreachable", reason=_reason(exc))
            return self.finding("port_held", what="it broke the connection off instead of answering")
        with response:
            if AGENT_HEADER not in response.headers:
                return self.finding("port_held", what=_looks_like(response))
            version = response.headers[AGENT_HEADER]
        return Finding("onprem.port", OK, self.subject("onprem.port"),
                       T(f"ja ({version})", f"yes ({version})"))

    # ---------------------------------------------------------------- what the engine asks for
    def _items(self, path: str, params: dict | None = None) -> list:
        body = self.get(API + path, params)
        items = body.get("value") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise self.bad_data(f"answered {API + path} without its list of records ('value').")
        return items

    def accounts(self) -> Iterator[Account]:
        for raw in self._items("/accounts"):
            try:
                yield Account(str(raw["number"]), str(raw.get("name") or ""), str(raw.get("type") or ""),
                              bool(raw.get("blocked", False)))
            except (KeyError, TypeError) as exc:
                raise self.bad_data(f"sent an account without {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        for raw in self._items("/dimensions"):
            try:
                slot = raw.get("slot")
                yield DimensionValue(str(raw["dimension"]), str(raw["code"]), str(raw.get("name") or ""),
                                     slot=int(slot) if slot in (1, 2, 3) else None,
                                     blocked=bool(raw.get("blocked", False)))
            except (KeyError, TypeError) as exc:
                raise self.bad_data(f"sent a dimension value without {exc}.") from None

    def _count(self, **params: int) -> int:
        body = self.get(API + "/entries/count", {k: str(v) for k, v in params.items()})
        try:
            return whole_number(body["count"], "count")
        except (KeyError, TypeError, ValueError):
            raise self.bad_data("answered /v1/entries/count without a whole 'count'.") from None

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        last = int((cursor or {}).get("entry", 0))
        pending = self._count(after=last)
        if not pending:
            return
        pages_total = math.ceil(pending / PAGE_SIZE)
        paginator = Keyset("entry", page_size=PAGE_SIZE, after=last or None)
        for page, (items, _) in enumerate(self.pages(paginator, API + "/entries"), start=1):
            entries = []
            for raw in items:
                entry = self._entry(raw)
                if int(entry.entry_id) <= last:
                    raise self.bad_data(f"sent entry {entry.entry_id} again or out of order (after {last}).")
                last = int(entry.entry_id)
                entries.append(entry)
            yield EntryPage(entries, {"entry": last}, page, max(pages_total, page), fetched=len(items))

    def _entry(self, raw: Any) -> Entry:
        if not isinstance(raw, dict):
            raise self.bad_data(f"sent an entry that is not a JSON object ({str(raw)[:40]}).")
        try:
            return Entry(str(whole_number(raw["entry"], "entry")), str(raw["account"]),
                         dt.date.fromisoformat(raw["date"]), money(raw["amount"]), str(raw.get("currency") or "DKK"),
                         money(raw.get("amount_currency", raw["amount"])),
                         **{ours: str(raw.get(theirs) or "") for ours, theirs in ENTRY_TEXTS.items()})
        except (KeyError, InvalidOperation, TypeError, ValueError) as exc:
            what = f"without the field {exc}" if isinstance(exc, KeyError) else f"with a value that is not valid: {exc}"
            raise self.bad_data(f"sent entry {raw.get('entry', '?')} {what}.") from None

    def count_entries(self, cursor: dict) -> int:
        return self._count(through=int((cursor or {}).get("entry", 0)))

    def _journals(self) -> list[dict]:
        return [j for j in self._items("/journals") if isinstance(j, dict)]

    def draft_lines(self) -> Iterator[DraftLine]:
        for journal in self._journals():
            for raw in self._items(f"/journals/{quote(str(journal['journal']), safe='')}/lines"):
                yield DraftLine(str(raw.get("voucher") or ""), str(raw["account"]),
                                dt.date.fromisoformat(raw["date"]), money(raw["amount"]))

    def check_access(self) -> None:
        self.status()

    def status(self) -> dict:
        body = self.get(API + "/status")
        if not isinstance(body, dict):
            raise self.bad_data("answered /v1/status with something that is not a JSON object.")
        return body

    # ---------------------------------------------------------------- the connection doctor
    def diagnose(self, quick: bool = False) -> list[Finding]:
        """The manual's checklist, in order; a check that cannot be made because an earlier one
        failed is listed as not checked. `quick`: without counting the draft journals."""
        findings: list[Finding] = []

        def rest(because: T) -> list[Finding]:
            done = {f.check for f in findings}
            return findings + [Finding(c, SKIP, self.subject(c), because) for c in CHECKS
                               if c not in done and not (quick and c == "drafts")]

        port = self.reach()
        findings.append(port)
        if port.failed:
            return rest(T("ikke tjekket: agenten svarer ikke", "not checked: the agent does not answer"))
        try:
            status = self.status()
        except AgentProblem as exc:
            findings.append(exc.finding)
            if exc.finding.check == "onprem.clock":
                findings.insert(1, Finding("onprem.key", OK, self.subject("onprem.key"),
                                           T("passer (signaturen blev godkendt)", "matches (the signature was accepted)"),
                                           credentials=True))
            return rest(T("ikke tjekket: agenten afviste forespørgslen", "not checked: the agent refused the request"))
        except SyncError as exc:  # the agent answered, but not its status (a 5xx, a body it must not send)
            findings.append(from_error("onprem.status", T("Agentens status", "The agent's status"), exc))
            return rest(T("ikke tjekket: agenten oplyste ikke sin status",
                          "not checked: the agent did not give its status"))
        findings.append(Finding("onprem.key", OK, self.subject("onprem.key"),
                                T("passer", "matches"), credentials=True))
        findings += self._status_findings(status)
        if not quick:
            ready = not any(f.failed for f in findings)
            findings.append(self._drafts() if ready else Finding(
                "drafts", SKIP, self.subject("drafts"), T("ikke tjekket", "not checked")))
        return findings

    def _status_findings(self, status: dict) -> list[Finding]:
        problems = {code: True for code in status.get("problems") or []}
        system = status.get("system") or {}
        product = system.get("product") or "the accounting system"
        values = {"product": product}
        out = [self._clock_finding(status.get("agent") or {})]
        database = status.get("database") or {}
        if "database_missing" in problems or database.get("exists") is False:
            out.append(self.finding("database_missing", path=database.get("path") or "?"))
            gone = T("ikke tjekket: databasen blev ikke fundet", "not checked: the database was not found")
            return out + [Finding(c, SKIP, self.subject(c), gone) for c in
                          ("onprem.password", "onprem.licence", "onprem.login_message", "onprem.user",
                           "onprem.customised")]
        out.append(Finding("onprem.database", OK, self.subject("onprem.database"),
                           T(f"fundet i {database.get('path')}", f"found at {database.get('path')}")))
        if "file_password" in problems or database.get("password"):
            out.append(self.finding("file_password"))
        else:
            out.append(Finding("onprem.password", OK, self.subject("onprem.password"),
                               T("intet password", "no password")))
        out.append(self._licence_finding(status.get("licence") or {}, product, "licence_expired" in problems))
        message = status.get("login_message")
        if "login_message" in problems or message:
            out.append(self.finding("login_message", text=str(message or "")[:200], **values))
        else:
            out.append(Finding("onprem.login_message", OK, self.subject("onprem.login_message"),
                               T("ingen besked", "no message")))
        users = status.get("users") or {}
        count, user = users.get("count"), users.get("integration_user") or "?"
        if "integration_user_missing" in problems or users.get("integration_user_exists") is False:
            out.append(self.finding("integration_user_missing", count=count if count is not None else "?", user=user))
        else:
            out.append(Finding("onprem.user", OK, self.subject("onprem.user"), T(
                f"{user} findes ({count} bruger(e) i alt)", f"{user} exists ({count} user(s) in all)")))
        out.append(self._schema_finding(status.get("schema") or {}, "schema_customised" in problems))
        return out

    def _clock_finding(self, agent: dict) -> Finding:
        values = _skew_values(agent.get("time"), agent.get("window_seconds"))
        skew = values.get("seconds")
        if skew is None:
            return Finding("onprem.clock", WARN, self.subject("onprem.clock"),
                           T("agenten oplyste ikke sin tid", "the agent did not say its time"))
        if abs(skew) <= CLOCK_WARN_SECONDS:
            return Finding("onprem.clock", OK, self.subject("onprem.clock"), T("går rigtigt", "is right"))
        return Finding("onprem.clock", WARN, self.subject("onprem.clock"), T(
            f"går {values['minutes']} minutter {values['direction_da']}; ved {values['window']} minutter afviser "
            "agenten budget123",
            f"is {values['minutes']} minutes {values['direction_en']}; at {values['window']} minutes the agent "
            "refuses budget123"), PROBLEMS["clock_skew"][2])

    def _licence_finding(self, licence: dict, product: str, expired: bool) -> Finding:
        expires = licence.get("expires")
        if expired or licence.get("expired"):
            return self.finding("licence_expired", product=product, expires=expires or "?")
        subject = self.subject("onprem.licence")
        if not expires:
            return Finding("onprem.licence", OK, subject, T("gyldig", "valid"))
        try:
            left = (dt.date.fromisoformat(str(expires)) - dt.date.today()).days
        except ValueError:
            left = None
        if left is not None and left <= LICENCE_WARN_DAYS:
            return Finding("onprem.licence", WARN, subject, T(
                f"udløber {expires} (om {left} dage)", f"expires on {expires} (in {left} days)"), T(
                "Forny licensen i god tid hos leverandøren eller forhandleren.",
                "Renew the licence in good time with the vendor or dealer."))
        return Finding("onprem.licence", OK, subject, T(f"gyldig til {expires}", f"valid until {expires}"))

    def _schema_finding(self, schema: dict, blocking: bool) -> Finding:
        differences = _differences(schema.get("differences") or [])
        if blocking or (schema.get("readable") is False):
            return self.finding("schema_customised", differences=differences)
        if differences:
            return Finding("onprem.customised", WARN, self.subject("onprem.customised"), T(
                f"tabellerne afviger fra standarden ({differences}), men agenten kan læse det, budget123 skal bruge",
                f"the tables differ from the standard ({differences}), but the agent can read what budget123 needs"),
                T("Intet nu; ser tallene forkerte ud efter tilretningen, så kontakt budget123's support.",
                  "Nothing now; if figures look wrong after the customisation, contact budget123's support."))
        return Finding("onprem.customised", OK, self.subject("onprem.customised"),
                       T("standardtabeller", "standard tables"))

    def _drafts(self) -> Finding:
        # The journals' own line counts: one request, not every line.
        return draft_finding(lambda: sum(int(j.get("lines") or 0) for j in self._journals()))


def _skew_values(agent_time: Any, window_seconds: Any) -> dict:
    window = int(window_seconds) if isinstance(window_seconds, (int, float)) or str(window_seconds).isdigit() else 300
    values = {"window": max(1, round(window / 60))}
    try:
        agent = dt.datetime.fromisoformat(str(agent_time).replace("Z", "+00:00"))
        if agent.tzinfo is None:
            agent = agent.replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return values
    seconds = (agent - dt.datetime.now(dt.timezone.utc)).total_seconds()
    values.update(seconds=seconds, minutes=max(1, round(abs(seconds) / 60)),
                  direction_da="foran" if seconds > 0 else "bagud",
                  direction_en="ahead of budget123's" if seconds > 0 else "behind budget123's")
    if abs(seconds) < 60:
        values["minutes"] = round(abs(seconds) / 60, 1)
    return values


def _refusal_values(detail: dict) -> dict:
    values = {k: v for k, v in detail.items() if isinstance(v, (str, int)) and k not in ("code", "message")}
    if "differences" in detail:
        values["differences"] = _differences(detail["differences"])
    values.setdefault("product", "the accounting system")
    return values


def _differences(differences: Any) -> str:
    parts = []
    for d in differences if isinstance(differences, list) else []:
        if isinstance(d, dict):
            table, column, change = d.get("table", "?"), d.get("column"), d.get("change", "changed")
            parts.append(f"{table}.{column} {change}" if column else f"{table} {change}")
    return ", ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")


def _cause(exc: BaseException, kind: type) -> BaseException | None:
    """The first exception of `kind` in exc's chain (causes, contexts, urllib3's `reason`)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return None


def _reason(exc: BaseException) -> str:
    found = _cause(exc, OSError)
    return (getattr(found, "strerror", None) or type(found).__name__) if found else type(exc).__name__


__all__ = ["AgentAuth", "AgentProblem", "NotTheAgent", "OnPremConnector", "OnPremSettings", "PROBLEMS",
           "response_proof"]
