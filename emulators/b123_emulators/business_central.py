"""An emulator of Microsoft Dynamics 365 Business Central's API v2.0 and of the Microsoft Entra ID
sign-in in front of it, served over HTTPS on loopback (MSAL accepts only https authorities).

One server plays both sides, so a tenant's connection points `login_url` and `api_url` at `emu.url`
(`emu.connection()` gives the whole connection JSON). Shapes follow
/work/shared/reference/accounting-apis.md section 2; choices the vendor does not document are marked
[?] in comments.

    with BusinessCentralEmulator(entries=3000) as emu:   # REQUESTS_CA_BUNDLE=emu.ca_file for clients

Entra ID ({tenant} is the Entra tenant's id or its domain)
- GET  /{tenant}/v2.0/.well-known/openid-configuration: what MSAL reads first; its endpoints point
  back at this server.
- POST /{tenant}/oauth2/v2.0/token, the client-credentials form: `{"token_type": "Bearer",
  "expires_in", "ext_expires_in", "access_token"}`, a token living `token_lifetime` seconds. Errors as
  Entra writes them, `{"error", "error_description": "AADSTSnnnn: ...", "error_codes", ...}`:
  unknown tenant 400 invalid_tenant AADSTS90002 (also on the openid-configuration), unknown client
  id 400 unauthorized_client AADSTS700016, wrong or revoked secret 401 invalid_client AADSTS7000215,
  another scope 400 invalid_scope AADSTS1002012, another grant 400 unsupported_grant_type AADSTS70003.

Business Central, under /v2.0/{tenant}/{environment}/api/v2.0
- `companies`, and in `companies({id})`: `accounts`, `dimensions`, `dimensions({id})/dimensionValues`,
  `dimensionValues`, `generalLedgerEntries` (`$expand=dimensionSetLines`; `/$count`),
  `generalLedgerSetup`, `journals`, `journals({id})/journalLines`, `accountingPeriods`.
- `$filter`: terms `field op value` (eq ne gt ge lt le) joined by `and`; `or` only between terms on
  one field, as BC refuses an `or` across fields (400). Fields: entries `entryNumber`,
  `lastModifiedDateTime`, `postingDate`, `accountNumber`; accounts `dateFilter`, the
  date range the accounts' `netChange` covers [?]. `$orderby` (fields, asc|desc), `$top`,
  `$count=true` (`@odata.count`), `Prefer: odata.maxpagesize=N` (default 20,000; answered with
  `Preference-Applied`), and `@odata.nextLink` with a `$skiptoken`: for entries the last row's sort
  key [?], so a row that changes while pages are read is neither skipped nor repeated; an offset for
  the small lists.
- Bearer tokens: one this server issued, unexpired, not revoked, for this Entra tenant; else 401
  `Authentication_InvalidCredentials` "The credentials provided are incorrect" [?]. A valid token of
  an app that is not registered in BC (`unregister_app()`) gets 401 with the same code and "The
  server has rejected the client credentials." [seen, widely reported for an app missing from BC's
  "Microsoft Entra Applications" page]. Other errors `{"error": {"code", "message"}}`: 404
  `BadRequest_NotFound` (unknown company or path), 404 `NoEnvironment` (unknown environment) [?],
  400 `BadRequest`, 429 `Application_TooManyRequests` with Retry-After, 5xx.

The books are company.py's (one `Company` per BC company, `companies=("Name", ...)`, the later ones
with other seeds), in BC's shapes: chart types as BC names them, local-currency debit/credit
amounts, document numbers and types, and four dimensions - AFDELING (global 1), PROJEKT (global 2),
OMRÅDE (shortcut 3), MEDARBEJDER (shortcut 4), listed alphabetically, so the first two listed are
not the global two - whose values each entry carries as dimension set lines. Recorded real-response
quirks are reproduced: `_xHHHH_` in enum values (`"_x0020_"`, `"Begin_x0020_Total"`,
`"General_x0020_Ledger_x0020_Entry"`), amounts in shortest form (`55.4`, `0`), lastModifiedDateTime
with 0 to 3 fraction digits, `@odata.etag` on every row, and entries whose dimensions were corrected
long after posting (one in 53 P&L entries: its lastModifiedDateTime months after its neighbours').

For tests: `book_entries(n)`, `correct_dimension(entry_no, code, value)`, `add_journal_lines(n)`,
`post_journals()`, `expire_tokens()`, `expire_tokens_after(pages)`, `revoke_secret()`,
`restore_secret(secret)`, `unregister_app()`, `register_app()`; truth: `sums_by_account_month()`,
`sums_by_dimension(code)`, `entry(n)`; who got which token: `issued_tokens`, `token_uses`.
Faults (`emu.faults`, faults.py): the refusals through `gate()` on Business Central requests (not on
Entra's), `page_delay` on G/L entry pages, and the transport faults of the server base.

Run it by hand: python -m b123_emulators.business_central --port 8767 --entries 5000
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import re
import secrets
import threading
import time
import uuid
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from b123_emulators.company import _PNL, SUMMED, TOTAL_FROM, Company, Line, mix
from b123_emulators.query import Dnf, QueryError, matches, parse_odata_filter
from b123_emulators.server import EmulatorServer, HttpError, Request, Response, json_response

SCOPE = "https://api.businesscentral.dynamics.com/.default"
MAX_PAGE_SIZE = 20_000  # BC's own page size [doc]
STEP_MS = 40_000  # generated entries were posted about 40 s apart
CORRECTED_EVERY = 53  # one P&L entry in 53 had a dimension corrected months after posting
UTC = dt.timezone.utc

# (code, name, values): values (code, name); listed by code, as BC lists them.
DIMENSIONS = (
    ("AFDELING", "Afdeling", (("ADM", "Administration"), ("LAGER", "Lager"), ("PROD", "Produktion"),
                              ("SALG", "Salg"), ("UDV", "Udvikling"))),
    ("MEDARBEJDER", "Medarbejder", tuple((f"M{i:02d}", name) for i, name in enumerate(
        ("Anne Holm", "Bo Lund", "Carla Friis", "Dennis Ravn", "Eva Bach"), start=1))),
    ("OMRÅDE", "Område", (("NORD", "Nordjylland"), ("SYD", "Syddanmark"), ("VEST", "Vestjylland"),
                          ("ØST", "Sjælland og øerne"))),
    ("PROJEKT", "Projekt", tuple((f"P{100 + i}", f"Projekt {name}") for i, name in enumerate(
        ("Havnebyen", "Skovbrynet", "Åkanten", "Møllegården", "Engen", "Kirkebakken")))),
)
GLOBAL_1, GLOBAL_2, SHORTCUT_3, SHORTCUT_4 = "AFDELING", "PROJEKT", "OMRÅDE", "MEDARBEJDER"
_DIMENSION_NAMES = {code: name for code, name, _ in DIMENSIONS}
_VALUES = {code: tuple(v for v, _ in values) for code, _, values in DIMENSIONS}
_VALUE_NAMES = {(code, v): n for code, _, values in DIMENSIONS for v, n in values}
# company.py's departmental distributions as departments: the split ones to their first department.
_DEPARTMENT_OF = {1: "SALG", 2: "ADM", 3: "PROD", 4: "LAGER", 6: "SALG", 7: "PROD"}

_ACCOUNT_TYPES = {"profitAndLoss": "Posting", "status": "Posting", "heading": "Heading",
                  "headingStart": "Begin_x0020_Total", "sumInterval": "End_x0020_Total",
                  "totalFrom": "Total", "sumAlpha": "Total"}
_DOCUMENT_TYPES = {"customerInvoice": "Invoice", "supplierInvoice": "Invoice", "customerPayment": "Payment",
                   "supplierPayment": "Payment"}  # the rest are blank: "_x0020_"
_DOCUMENT_PREFIX = {"customerInvoice": "S-FAK", "supplierInvoice": "K-FAK", "customerPayment": "INDB",
                    "supplierPayment": "UDB", "financeVoucher": "KASSE", "systemEntry": "SYS",
                    "openingEntry": "PRIMO"}
_MONTH_NAMES = ("Januar", "Februar", "Marts", "April", "Maj", "Juni", "Juli", "August", "September",
                "Oktober", "November", "December")

ENTRA_ERRORS = {
    "invalid_tenant": (400, 90002, "Tenant '{tenant}' not found. Check to make sure you have the correct "
                                   "tenant ID and are signing into the correct cloud."),
    "unauthorized_client": (400, 700016, "Application with identifier '{client_id}' was not found in the "
                                         "directory '{tenant}'."),
    "invalid_client": (401, 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
                                     "request is the client secret value, not the client secret ID, for a "
                                     "secret added to app '{client_id}'."),
    "invalid_scope": (400, 1002012, "The provided value for scope {scope} is not valid. Client credential "
                                    "flows must have a scope value with /.default suffixed to the resource "
                                    "identifier (application ID URI)."),
    "unsupported_grant_type": (400, 70003, "The app requested an unsupported grant type '{grant}'."),
}
_BC_CODES = {400: "BadRequest", 401: "Authentication_InvalidCredentials",
             403: "Authorization_InsufficientPermissions", 404: "BadRequest_NotFound",
             429: "Application_TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
             503: "ServiceUnavailable", 504: "GatewayTimeout"}
_EXPIRED = "The credentials provided are incorrect"
_NOT_REGISTERED = "The server has rejected the client credentials."


def guid(*parts: int) -> str:
    """A deterministic GUID from integers."""
    h = 0
    for part in parts:
        h = mix(h ^ part)
    return str(uuid.UUID(int=(h << 64) | mix(h ^ 0xB123)))


def iso_time(moment: dt.datetime) -> str:
    """BC's lastModifiedDateTime: milliseconds with trailing zeros dropped (`59.58Z`, `59.583Z`,
    `59Z`), as recorded from real responses."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond // 1000:03d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def number(cents: int) -> Decimal:
    """An amount as BC writes it: the shortest form (55.4, 0, 9.23), exactly."""
    return Decimal(cents).scaleb(-2).normalize()


def _now() -> dt.datetime:
    moment = dt.datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _etag(*parts: Any) -> str:
    raw = f"{len(parts)};{mix(hash(parts) & 0xFFFFFFFFFFFFFFFF)};00;".encode()
    return 'W/"' + base64.b64encode(b"J" + raw).decode() + '"'


@dataclass
class _Token:
    value: str
    client_id: str
    tenant: str  # the Entra tenant's id
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class Books:
    """One BC company: company.py's books plus what BC adds (ids, times, dimension sets)."""

    name: str
    id: str
    company: Company
    key: int
    generated_base: dt.datetime  # lastModifiedDateTime of generated entry 0
    modified: dict[int, dt.datetime] = field(default_factory=dict)  # changed since: booked, corrected
    dimensions: dict[int, dict[str, str]] = field(default_factory=dict)  # corrected dimension sets
    journal_id: str = ""
    version: int = 0
    _cache: dict = field(default_factory=dict)  # orders and net changes, valid for `version`


class BusinessCentralEmulator(EmulatorServer):
    server_version = "BusinessCentralEmulator/1.0"
    thread_name = "business-central-emulator"
    refusals = {
        **EmulatorServer.refusals,
        "revoked": (_EXPIRED, ""),
        "forbidden": ("You do not have the following permissions on TableData G/L Entry: Read.", ""),
        "rate_limited": ("Too many requests reached. Actual (6001). Maximum (6000).", ""),
        "server_error": ("Something went wrong. Please try again later.", ""),
    }

    def __init__(self, entries: int = 3000, seed: int = 1, port: int = 0, tls: bool = True,
                 companies: tuple[str, ...] = ("CRONUS Danmark A/S",), environment: str = "production",
                 client_id: str = "3f1b7c52-9a4e-4d1e-8c0b-6f2a9e5d4c31",
                 client_secret: str = "bc-client-secret-emulated", token_lifetime: int = 3599,
                 drafts: int = 4):
        super().__init__(port=port, tls=tls)
        self.entra_tenant_id = guid(seed, 0xE17A)
        self.entra_domain = "budgetdemo.onmicrosoft.com"
        self.environment = environment
        self.client_id = client_id
        self.token_lifetime = token_lifetime
        self._secrets = {client_secret}
        self.registered = True  # the app is on BC's "Microsoft Entra Applications" page
        self._lock = threading.RLock()
        self._tokens: dict[str, _Token] = {}
        self.issued_tokens: list[_Token] = []
        self.token_uses: list[tuple[str, str]] = []  # (token, company id or '') per BC request
        self._expire_after: int | None = None  # entries pages left before every token expires
        start = _now()
        self.books: dict[str, Books] = {}
        for i, name in enumerate(companies):
            company = Company(entries, seed + 1000 * i, drafts=drafts)
            base = start - dt.timedelta(days=400, milliseconds=STEP_MS * (entries + 1))
            self.books[name] = Books(name, guid(seed, i, 0xC0), company, mix(seed ^ (i << 20) ^ 0xBC),
                                     base, journal_id=guid(seed, i, 0x10))

    # ------------------------------------------------------------------ for tests
    def connection(self, company: str | None = None, **changes: str) -> dict:
        """The connection JSON a tenant of this server's company (default: the first) is added with."""
        return {"entra_tenant": self.entra_tenant_id, "environment": self.environment,
                "company": company or self._first.name, "client_id": self.client_id,
                "client_secret": sorted(self._secrets)[0] if self._secrets else "revoked",
                "login_url": self.url, "api_url": self.url, **changes}

    @property
    def _first(self) -> Books:
        return next(iter(self.books.values()))

    def _books(self, company: str | None) -> Books:
        return self.books[company] if company else self._first

    def book_entries(self, count: int, company: str | None = None, on: dt.date | None = None) -> list[int]:
        """Posts count/2 balanced vouchers now; returns their entry numbers."""
        books = self._books(company)
        with self._lock:
            numbers = books.company.book_entries(count, on=on)
            moment = _now()
            for n in numbers:
                books.modified[n] = moment
            books.version += 1
        return numbers

    def correct_dimension(self, entry_no: int, code: str, value: str, company: str | None = None) -> None:
        """Sets (or with value '' removes) dimension `code` on a posted entry, as a user correcting
        its dimensions does in BC: its lastModifiedDateTime moves to now."""
        books = self._books(company)
        if value and value not in _VALUES[code]:
            raise ValueError(f"{value!r} is not a value of dimension {code}")
        with self._lock:
            line = self._line(books, entry_no)
            dims = dict(self._dimension_set(books, line))
            if value:
                dims[code] = value
            else:
                dims.pop(code, None)
            books.dimensions[entry_no] = dims
            books.modified[entry_no] = _now()
            books.version += 1

    def add_journal_lines(self, count: int = 2, company: str | None = None) -> list[dict]:
        """Puts count/2 balanced vouchers in the general journal (not posted); returns the lines."""
        books = self._books(company)
        lines = books.company.add_draft(count)
        with self._lock:
            books.version += 1
        drafts = books.company.snapshot().drafts
        return [self._journal_line(books, line, drafts.index(line)) for line in lines]

    def post_journals(self, company: str | None = None) -> list[int]:
        """Posts every journal line: they become G/L entries (keeping their document numbers)."""
        books = self._books(company)
        with self._lock:
            numbers = books.company.book_drafts()
            moment = _now()
            for n in numbers:
                books.modified[n] = moment
            books.version += 1
        return numbers

    def expire_tokens(self) -> None:
        """Every token issued so far stops working now (expired or revoked early)."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    def expire_tokens_after(self, pages: int) -> None:
        """Once `pages` more G/L entry pages are served, every token issued so far expires."""
        with self._lock:
            self._expire_after = pages

    def revoke_secret(self) -> None:
        """The app's client secret is deleted in Entra: the token endpoint refuses it from now on.
        Tokens issued before stay valid until they expire, as in Entra."""
        with self._lock:
            self._secrets.clear()

    def restore_secret(self, secret: str) -> str:
        """A working client secret again (a new one the administrator made, or the old one)."""
        with self._lock:
            self._secrets = {secret}
        return secret

    def unregister_app(self) -> None:
        """The app is removed from BC's "Microsoft Entra Applications" page: Entra still issues
        tokens, BC refuses them."""
        self.registered = False

    def register_app(self) -> None:
        self.registered = True

    def sums_by_account_month(self, company: str | None = None) -> dict[tuple[int, dt.date], Decimal]:
        return {key: Decimal(cents).scaleb(-2) for key, cents in self._books(company).company.sums().items()}

    def sums_by_dimension(self, code: str, company: str | None = None) -> dict[str, Decimal]:
        """Posted amounts by the value of dimension `code` ('' for entries without it)."""
        books = self._books(company)
        totals: dict[str, int] = defaultdict(int)
        for n in range(1, self._next_number(books)):
            line = self._line(books, n)
            totals[self._dimension_set(books, line).get(code, "")] += line.base
        return {value: Decimal(cents).scaleb(-2) for value, cents in totals.items()}

    def entry(self, n: int, company: str | None = None) -> dict:
        """Posted entry n as the API shows it, dimension set lines expanded."""
        books = self._books(company)
        return self._entry(books, n, expand=True)

    def journal_lines(self, company: str | None = None) -> list[dict]:
        books = self._books(company)
        return [self._journal_line(books, line, i) for i, line in enumerate(books.company.snapshot().drafts)]

    # ------------------------------------------------------------------ serving
    def error_response(self, error: HttpError) -> Response:
        code = error.extra.get("code") or _BC_CODES.get(error.status, "BadRequest")
        return json_response({"error": {"code": code, "message": error.message}}, error.status)

    def response_headers(self, response: Response) -> dict[str, str]:
        return {"OData-Version": "4.0"}

    def route(self, request: Request) -> Response:
        parts = [unquote(p) for p in request.path.strip("/").split("/")]
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"] and request.method == "GET":
            return self._openid_configuration(parts[0])
        if parts[1:] == ["oauth2", "v2.0", "token"] and request.method == "POST":
            return self._token(parts[0], request.body)
        if len(parts) >= 6 and parts[0] == "v2.0" and parts[3:5] == ["api", "v2.0"] and request.method == "GET":
            return self._business_central(parts[1], parts[2], parts[5:], request)
        raise HttpError(404, f"No resource at {request.path}.")

    # ------------------------------------------------------------------ Entra ID
    def _tenant(self, name: str) -> str | None:
        return self.entra_tenant_id if name.lower() in (self.entra_tenant_id, self.entra_domain) else None

    def _entra_error(self, error: str, **values: str) -> Response:
        status, code, text = ENTRA_ERRORS[error]
        moment = dt.datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        description = (f"AADSTS{code}: {text.format(**values)} Trace ID: {trace} Correlation ID: "
                       f"{correlation} Timestamp: {moment}")
        return json_response({"error": error, "error_description": description, "error_codes": [code],
                              "timestamp": moment, "trace_id": trace, "correlation_id": correlation,
                              "error_uri": f"{self.url}/error?code={code}"}, status)

    def _openid_configuration(self, name: str) -> Response:
        tenant = self._tenant(name)
        if tenant is None:
            return self._entra_error("invalid_tenant", tenant=name)
        base = f"{self.url}/{tenant}"
        return json_response({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.url}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.url}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
        })

    def _token(self, name: str, body: bytes) -> Response:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        tenant = self._tenant(name)
        if tenant is None:
            return self._entra_error("invalid_tenant", tenant=name)
        if form.get("grant_type") != "client_credentials":
            return self._entra_error("unsupported_grant_type", grant=form.get("grant_type", ""))
        if form.get("client_id") != self.client_id:
            return self._entra_error("unauthorized_client", client_id=form.get("client_id", ""), tenant=tenant)
        with self._lock:
            known_secret = form.get("client_secret") in self._secrets
        if not known_secret:
            return self._entra_error("invalid_client", client_id=self.client_id)
        if form.get("scope") != SCOPE:
            return self._entra_error("invalid_scope", scope=form.get("scope", ""))
        issued = time.time()
        token = _Token("eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(48), self.client_id, tenant, issued,
                       issued + self.token_lifetime)
        with self._lock:
            self._tokens[token.value] = token
            self.issued_tokens.append(token)
        return json_response({"token_type": "Bearer", "expires_in": self.token_lifetime,
                              "ext_expires_in": self.token_lifetime, "access_token": token.value},
                             headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    # ------------------------------------------------------------------ Business Central
    def _authenticate(self, request: Request, tenant: str | None) -> str:
        header = request.headers.get("Authorization") or ""
        value = header[7:] if header.startswith("Bearer ") else ""
        with self._lock:
            token = self._tokens.get(value)
        challenge = {"WWW-Authenticate": f'Bearer authorization_uri="{self.url}/{tenant or "common"}/oauth2/'
                                         f'authorize", resource_id="https://api.businesscentral.dynamics.com"'}
        if (token is None or token.revoked or token.expires_at <= time.time() or tenant is None
                or token.tenant != tenant):
            raise HttpError(401, _EXPIRED, headers=challenge)
        if not self.registered:
            raise HttpError(401, _NOT_REGISTERED, headers=challenge)
        return value

    def _business_central(self, tenant_name: str, environment: str, rest: list[str], request: Request) -> Response:
        tenant = self._tenant(tenant_name)
        token = self._authenticate(request, tenant)
        self.gate()
        if environment.lower() != self.environment.lower():
            raise HttpError(404, f"The environment '{environment}' does not exist.", code="NoEnvironment")
        params = _params(request)
        if rest == ["companies"]:
            with self._lock:
                self.token_uses.append((token, ""))
            return self._collection(request, params, [self._company_row(b) for b in self.books.values()])
        match = re.fullmatch(r"companies\((.+)\)", rest[0])
        books = next((b for b in self.books.values() if match and b.id == match[1]), None)
        if books is None:
            raise HttpError(404, f"The company '{rest[0]}' does not exist.")
        with self._lock:
            self.token_uses.append((token, books.id))
        what = rest[1:]
        if what == ["generalLedgerEntries"]:
            return self._entries(books, request, params)
        if what == ["generalLedgerEntries", "$count"]:
            dnf = _filter(params.get("$filter"), ENTRY_FIELDS)
            count = sum(1 for _ in self._matching(books, dnf))
            return Response(200, str(count).encode(), content_type="text/plain; charset=utf-8")
        if what == ["accounts"]:
            return self._collection(request, params, self._accounts(books, params))
        if what == ["dimensions"]:
            return self._collection(request, params, [_dimension_row(code) for code, _, _ in DIMENSIONS])
        if what == ["dimensionValues"]:
            return self._collection(request, params, [_value_row(code, v) for code, _, _ in DIMENSIONS
                                                      for v in _VALUES[code]])
        dimension = re.fullmatch(r"dimensions\((.+)\)", what[0]) if len(what) == 2 else None
        if dimension and what[1] == "dimensionValues":
            code = next((c for c, _, _ in DIMENSIONS if guid(_hash_text(c)) == dimension[1]), None)
            if code is None:
                raise HttpError(404, f"The dimension '{dimension[1]}' does not exist.")
            return self._collection(request, params, [_value_row(code, v) for v in _VALUES[code]])
        if what == ["generalLedgerSetup"]:
            return self._collection(request, params, [self._setup_row(books)])
        if what == ["journals"]:
            return self._collection(request, params, [self._journal_row(books)])
        journal = re.fullmatch(r"journals\((.+)\)", what[0]) if len(what) == 2 else None
        if journal and what[1] == "journalLines":
            if journal[1] != books.journal_id:
                raise HttpError(404, f"The journal '{journal[1]}' does not exist.")
            return self._collection(request, params, self.journal_lines(books.name))
        if what == ["accountingPeriods"]:
            return self._collection(request, params, self._periods(books))
        raise HttpError(404, f"No resource at {request.path}.")

    def _collection(self, request: Request, params: dict, rows: list[dict]) -> Response:
        """A small list, paged by offset."""
        if params.get("$filter") and not request.path.endswith("/accounts"):
            raise HttpError(400, "Filtering is not supported on this resource in the emulator.")
        size = _page_size(request)
        skip = int(params.get("$skiptoken") or 0)
        page = rows[skip:skip + size]
        body: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#collection", "value": page}
        if skip + size < len(rows):
            body["@odata.nextLink"] = self._next_link(request, params, str(skip + size))
        return json_response(body, headers=_applied(request))

    def _next_link(self, request: Request, params: dict, token: str) -> str:
        query = [(k, v) for k, v in params.items() if k != "$skiptoken"] + [("$skiptoken", token)]
        return f"{self.url}{request.path}?" + urlencode(query, quote_via=quote, safe="$,:'()")

    # ------------------------------------------------------------------ G/L entries
    def _next_number(self, books: Books) -> int:
        return books.company.snapshot().next_number

    def _line(self, books: Books, n: int) -> Line:
        company = books.company
        if 1 <= n <= company.generated:
            return company.line(n, company.snapshot().remap)
        for line in company.snapshot().booked:
            if line.number == n:
                return line
        raise KeyError(n)

    def _modified(self, books: Books, n: int, line: Line | None = None) -> dt.datetime:
        if n in books.modified:
            return books.modified[n]
        h = mix(books.key ^ (n * 0x9E3779B1))
        moment = books.generated_base + dt.timedelta(milliseconds=n * STEP_MS + h % 997 * (h >> 10 & 1))
        line = line or self._line(books, n)
        if line.account in _PNL and h % CORRECTED_EVERY == 0:  # a dimension added months later
            moment += dt.timedelta(days=30 + h % 170)
        return moment

    def _dimension_set(self, books: Books, line: Line) -> dict[str, str]:
        if line.number in books.dimensions:
            return books.dimensions[line.number]
        h = mix(books.key ^ (line.number * 0x51ED27) ^ 0xD1)
        dims: dict[str, str] = {}
        if line.account in _PNL:
            department = _DEPARTMENT_OF.get(line.distribution)
            if department:
                dims["AFDELING"] = department
            if h & 3 == 0:
                dims["PROJEKT"] = _VALUES["PROJEKT"][(h >> 2) % len(_VALUES["PROJEKT"])]
            if h >> 8 & 1:
                dims["OMRÅDE"] = _VALUES["OMRÅDE"][(h >> 9) % len(_VALUES["OMRÅDE"])]
            if h >> 16 & 7 == 0:
                dims["MEDARBEJDER"] = _VALUES["MEDARBEJDER"][(h >> 19) % len(_VALUES["MEDARBEJDER"])]
        elif h & 7 == 0:
            dims["OMRÅDE"] = _VALUES["OMRÅDE"][(h >> 3) % len(_VALUES["OMRÅDE"])]
        return dims

    def _entry(self, books: Books, n: int, expand: bool) -> dict:
        line = self._line(books, n)
        entry_id = guid(books.key, n, 0xE7)
        row = {
            "@odata.etag": _etag(n, books.version if n in books.modified else 0),
            "id": entry_id,
            "entryNumber": n,
            "postingDate": line.date,
            "documentNumber": f"{_DOCUMENT_PREFIX.get(line.entry_type, 'G')}{line.voucher:06d}",
            "documentType": _DOCUMENT_TYPES.get(line.entry_type, "_x0020_"),
            "accountId": guid(_hash_text(str(line.account)), 0xAC),
            "accountNumber": str(line.account),
            "description": line.text[:100],
            "debitAmount": number(max(line.base, 0)),
            "creditAmount": number(max(-line.base, 0)),
            "additionalCurrencyDebitAmount": 0,
            "additionalCurrencyCreditAmount": 0,
            "lastModifiedDateTime": iso_time(self._modified(books, n, line)),
        }
        if expand:
            row["dimensionSetLines"] = [_set_line(entry_id, code, value)
                                        for code, value in sorted(self._dimension_set(books, line).items())]
        return row

    def _order(self, books: Books, orderby: str) -> tuple[list[tuple], list[int]]:
        """Every entry number in `orderby` order, with its sort key (ints; desc fields negated)."""
        fields = _orderby(orderby)
        cached = self._cached(books, ("order", orderby))
        if cached is not None:
            return cached
        version = books.version
        rows = []
        for n in range(1, self._next_number(books)):
            values = {"entryNumber": n, "lastModifiedDateTime": _micros(self._modified(books, n))}
            if "postingDate" in (f for f, _ in fields):
                values["postingDate"] = dt.date.fromisoformat(self._line(books, n).date).toordinal()
            rows.append((tuple(-values[f] if desc else values[f] for f, desc in fields), n))
        rows.sort()
        return self._keep(books, version, ("order", orderby), ([k for k, _ in rows], [n for _, n in rows]))

    def _cached(self, books: Books, key: tuple) -> Any:
        with self._lock:
            if books._cache.get("version") != books.version:
                books._cache = {"version": books.version}
            return books._cache.get(key)

    def _keep(self, books: Books, version: int, key: tuple, value: Any) -> Any:
        with self._lock:
            if books.version == version and books._cache.get("version") == version:
                books._cache[key] = value
        return value

    def _matching(self, books: Books, dnf: Dnf | None, start: int = 0, order=None):
        keys, numbers = order or self._order(books, "entryNumber")
        for i in range(start, len(numbers)):
            n = numbers[i]
            if dnf is None or matches(dnf, lambda f, n=n: self._field(books, n, f)):
                yield i, n

    def _field(self, books: Books, n: int, name: str) -> Any:
        if name == "entryNumber":
            return n
        if name == "lastModifiedDateTime":
            return self._modified(books, n)
        line = self._line(books, n)
        return line.date if name == "postingDate" else str(line.account)

    def _entries(self, books: Books, request: Request, params: dict) -> Response:
        dnf = _filter(params.get("$filter"), ENTRY_FIELDS)
        orderby = params.get("$orderby") or "entryNumber"
        expand = params.get("$expand", "")
        if expand not in ("", "dimensionSetLines"):
            raise HttpError(400, f"Could not find a property named '{expand}' on type 'generalLedgerEntry'.")
        keys, numbers = order = self._order(books, orderby)
        start = 0
        if params.get("$skiptoken"):
            start = bisect_right(keys, tuple(int(v) for v in params["$skiptoken"].split(",")))
        top = int(params["$top"]) if params.get("$top") else None
        size = min(_page_size(request), top if top is not None else MAX_PAGE_SIZE)
        chosen = []
        more = False
        for i, n in self._matching(books, dnf, start, order):
            if len(chosen) == size:
                more = top is None  # with $top: one page, at most that many [?]
                break
            chosen.append((i, n))
        if len(chosen) > 1:  # a page of entries, not the question for the newest or highest one
            self.faults.page_wait(chosen[0][1])
        body: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#generalLedgerEntries"}
        if params.get("$count") == "true":
            body["@odata.count"] = sum(1 for _ in self._matching(books, dnf, 0, order))
        body["value"] = [self._entry(books, n, bool(expand)) for _, n in chosen]
        if more:
            last = keys[chosen[-1][0]]
            body["@odata.nextLink"] = self._next_link(request, params, ",".join(map(str, last)))
        self._page_served()
        return json_response(body, headers=_applied(request))

    def _page_served(self) -> None:
        with self._lock:
            if self._expire_after is None:
                return
            self._expire_after -= 1
            if self._expire_after > 0:
                return
            self._expire_after = None
        self.expire_tokens()

    # ------------------------------------------------------------------ the other resources
    def _company_row(self, books: Books) -> dict:
        created = iso_time(books.generated_base)
        return {"@odata.etag": _etag(books.id), "id": books.id, "systemVersion": "25.1.23456.24210",
                "timestamp": 12345, "name": books.name, "displayName": books.name, "businessProfileId": "",
                "systemCreatedAt": created, "systemCreatedBy": "00000000-0000-0000-0000-000000000001",
                "systemModifiedAt": created, "systemModifiedBy": "00000000-0000-0000-0000-000000000001"}

    def _net_change(self, books: Books, low: str, high: str) -> dict[int, int]:
        cached = self._cached(books, ("net", low, high))
        if cached is not None:
            return cached
        version = books.version
        sums: dict[int, int] = defaultdict(int)
        for n in range(1, self._next_number(books)):
            line = self._line(books, n)
            if low <= line.date <= high:
                sums[line.account] += line.base
        return self._keep(books, version, ("net", low, high), dict(sums))

    def _accounts(self, books: Books, params: dict) -> list[dict]:
        low, high = "0001-01-01", "9999-12-31"
        for conj in _filter(params.get("$filter"), ACCOUNT_FIELDS) or []:
            for term in conj:
                if term.field == "dateFilter" and term.op in ("gt", "gte"):
                    low = term.value
                elif term.field == "dateFilter" and term.op in ("lt", "lte"):
                    high = term.value
                elif term.field == "dateFilter" and term.op == "eq":
                    low = high = term.value
        net = self._net_change(books, low, high)
        with books.company.lock:
            accounts = sorted(books.company.accounts.values(), key=lambda a: a["number"])
        numbers = [a["number"] for a in accounts]
        rows = []
        for a in accounts:
            kind = a["type"]
            if kind == "sumInterval":
                low_n, high_n = SUMMED.get(a["number"], (a["number"], a["number"]))
                total = sum(net.get(k, 0) for k in numbers if low_n <= k <= high_n)
            elif kind == "totalFrom":
                total = sum(net.get(k, 0) for k in numbers if TOTAL_FROM.get(a["number"], 0) <= k < a["number"])
            else:
                total = net.get(a["number"], 0)
            rows.append({
                "@odata.etag": _etag(a["number"], a["name"]), "id": guid(_hash_text(str(a["number"])), 0xAC),
                "number": str(a["number"]), "displayName": a["name"], "category": _category(a),
                "subCategory": "", "blocked": bool(a["barred"]), "accountType": _ACCOUNT_TYPES[kind],
                "directPosting": _ACCOUNT_TYPES[kind] == "Posting", "netChange": number(total),
                "consolidationTranslationMethod": "Average_x0020_Rate_x0020__x0028_Manual_x0029_",
                "consolidationDebitAccount": "", "consolidationCreditAccount": "",
                "excludeFromConsolidation": False, "lastModifiedDateTime": iso_time(books.generated_base)})
        return rows

    def _setup_row(self, books: Books) -> dict:
        row = {"@odata.etag": _etag("setup"), "id": guid(books.key, 0x5E), "allowPostingFrom": "0001-01-01",
               "allowPostingTo": "0001-01-01", "additionalReportingCurrency": "", "localCurrencyCode": "DKK",
               "localCurrencySymbol": "kr.", "lastModifiedDateTime": iso_time(books.generated_base),
               "allowQueryFromConsolidation": False}
        shortcuts = (GLOBAL_1, GLOBAL_2, SHORTCUT_3, SHORTCUT_4, "", "", "", "")
        row.update({f"shortcutDimension{i}Code": code for i, code in enumerate(shortcuts, start=1)})
        return row

    def _journal_row(self, books: Books) -> dict:
        return {"@odata.etag": _etag("journal"), "id": books.journal_id, "code": "STANDARD",
                "displayName": "Standardkladde", "templateDisplayName": "KASSE",
                "lastModifiedDateTime": iso_time(books.generated_base),
                "balancingAccountId": "00000000-0000-0000-0000-000000000000", "balancingAccountNumber": ""}

    def _journal_line(self, books: Books, line: Line, index: int) -> dict:
        return {"@odata.etag": _etag("line", index), "id": guid(books.key, index, 0x11),
                "journalId": books.journal_id, "journalDisplayName": "STANDARD", "lineNumber": 10000 * (index + 1),
                "accountType": "G_x002F_L_x0020_Account", "accountId": guid(_hash_text(str(line.account)), 0xAC),
                "accountNumber": str(line.account), "postingDate": line.date,
                "documentNumber": f"{_DOCUMENT_PREFIX.get(line.entry_type, 'G')}{line.voucher:06d}",
                "externalDocumentNumber": "", "amount": number(line.base), "description": line.text[:100],
                "comment": "", "taxCode": "", "balanceAccountType": "G_x002F_L_x0020_Account",
                "balancingAccountId": "00000000-0000-0000-0000-000000000000", "balancingAccountNumber": "",
                "lastModifiedDateTime": iso_time(_now())}

    def _periods(self, books: Books) -> list[dict]:
        rows = []
        for year in books.company.years:
            for i, (first, _) in enumerate(year.months()):
                rows.append({"@odata.etag": _etag("period", first.isoformat()),
                             "id": guid(books.key, first.toordinal(), 0xAF), "startingDate": first.isoformat(),
                             "name": _MONTH_NAMES[first.month - 1], "newFiscalYear": i == 0,
                             "closed": year.closed, "dateLocked": year.closed,
                             "lastModifiedDateTime": iso_time(books.generated_base)})
        return rows


# ---------------------------------------------------------------------------------------------------
def moment(text: str) -> dt.datetime:
    """An OData datetimeoffset literal (`2025-01-31T12:00:59.58Z`)."""
    return dt.datetime.fromisoformat(text)


ENTRY_FIELDS: dict[str, Any] = {"entryNumber": int, "lastModifiedDateTime": moment, "postingDate": dt.date,
                                "accountNumber": str}
ACCOUNT_FIELDS: dict[str, Any] = {"dateFilter": dt.date}


def _filter(text: str | None, fields: dict[str, Any]) -> Dnf | None:
    """`$filter` read by the kit's OData parser; an `or` across different fields is refused, as BC does."""
    try:
        dnf = parse_odata_filter(text, fields)
    except QueryError as exc:
        raise HttpError(400, exc.message) from None
    if dnf and len(dnf) > 1 and len({t.field for conj in dnf for t in conj}) > 1:
        raise HttpError(400, "An 'or' between filters on different fields is not supported.")
    return dnf


def _micros(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


def _orderby(text: str) -> list[tuple[str, bool]]:
    fields = []
    for part in text.split(","):
        words = part.split()
        if not words or words[0] not in ("entryNumber", "lastModifiedDateTime", "postingDate") or (
                len(words) > 1 and words[1] not in ("asc", "desc")):
            raise HttpError(400, f"The $orderby '{text}' is not supported.")
        fields.append((words[0], len(words) > 1 and words[1] == "desc"))
    if "entryNumber" not in (f for f, _ in fields):
        fields.append(("entryNumber", False))  # the key breaks ties, as BC's own order does [?]
    return fields


def _params(request: Request) -> dict[str, str]:
    return dict(request.params)


def _page_size(request: Request) -> int:
    match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("Prefer") or "")
    return max(1, min(int(match[1]), MAX_PAGE_SIZE)) if match else MAX_PAGE_SIZE


def _applied(request: Request) -> dict[str, str]:
    match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("Prefer") or "")
    return {"Preference-Applied": f"odata.maxpagesize={match[1]}"} if match else {}


def _hash_text(text: str) -> int:
    h = 0
    for char in text:
        h = mix(h ^ ord(char))
    return h


def _dimension_row(code: str) -> dict:
    return {"@odata.etag": _etag("dim", code), "id": guid(_hash_text(code)), "code": code,
            "displayName": _DIMENSION_NAMES[code], "lastModifiedDateTime": "2024-01-02T09:15:27.31Z"}


def _value_row(code: str, value: str) -> dict:
    return {"@odata.etag": _etag("value", code, value), "id": guid(_hash_text(code), _hash_text(value)),
            "code": value, "dimensionId": guid(_hash_text(code)), "displayName": _VALUE_NAMES[(code, value)],
            "consolidationCode": "", "lastModifiedDateTime": "2024-01-02T09:15:27.4Z"}


def _set_line(entry_id: str, code: str, value: str) -> dict:
    return {"@odata.etag": _etag("set", entry_id, code), "id": guid(_hash_text(code)), "code": code,
            "consolidationCode": "", "parentId": entry_id, "parentType": "General_x0020_Ledger_x0020_Entry",
            "displayName": _DIMENSION_NAMES[code], "valueId": guid(_hash_text(code), _hash_text(value)),
            "valueCode": value, "valueConsolidationCode": "", "valueDisplayName": _VALUE_NAMES[(code, value)]}


def _category(account: dict) -> str:
    n, kind = account["number"], account["type"]
    if kind == "profitAndLoss":
        return "Income" if n < 1200 else "Cost_x0020_of_x0020_Goods_x0020_Sold" if n < 2000 else "Expense"
    if kind == "status":
        return "Assets" if n < 6000 else "Equity" if n < 6500 else "Liabilities"
    return "_x0020_"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated Business Central environment on loopback.")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    emulator = BusinessCentralEmulator(entries=args.entries, seed=args.seed, port=args.port)
    url = emulator.start()
    print(f"Business Central emulator at {url}  (certificate: {emulator.ca_file})")
    print(f"  connection: {emulator.connection()}")
    print("Ctrl-C stops it.", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
