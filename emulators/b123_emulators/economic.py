"""An emulator of Visma e-conomic's legacy REST API (read side), served over real HTTP on loopback.

Used by end-to-end tests, the demo and the benchmarks. It serves one deterministic Danish company
(company.py) and scales to a million posted entries without holding them in memory. This module is
what is e-conomic's: the paths, the envelopes and their pagination links, the filter fields, the
error bodies, the token headers. Shapes follow /work/shared/reference/accounting-apis.md section 1;
choices the vendor does not document are marked [?] in comments.

    with EconomicEmulator(entries=2000, seed=1) as emu:
        requests.get(emu.url + "/accounts", headers={"X-AppSecretToken": "emu-app-secret",
                                                      "X-AgreementGrantToken": "emu-grant"})

Faults (`emu.faults`, faults.py), all off by default: revoked, forbidden, rate_limit(),
retry_after_seconds, server_errors(), page_delay, corrupt, repeat_boundary_entry, leak_drafts,
book_while_paging, drip_bytes_per_second, truncate_body (every response); on entries pages
(/accounting-years/{year}[/periods/{n}]/entries): redirect_to, foreign_next_page, endless_pages,
huge_page_mb, gzip_bomb_mb; on every collection: self_loop_next_page.

Grants: `revoke_grant()` revokes the agreement's grants (401 for them from then on, unlike
`faults.revoked`, which refuses every token). The installation page ("Fetch new token automatically")
is `GET /secure/api1/requestaccess.aspx?appPublicToken=...&redirectUrl=...&locale=...`, on the same
server (e-conomic serves it from secure.e-conomic.com): the user's approval is emulated, and the
answer is a 302 to `redirectUrl` with `token=<new grant>` appended, a grant that works from then on.
`emu.consent` chooses what the user does: `approve = False` (declines: back without a token [?]) or
`agreement = N` (logs in to another agreement: the grant is for N, whose `/self` says so and whose
books are not emulated).

Run it by hand: python -m b123_emulators.economic --port 8765 --entries 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import secrets
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Callable, Iterator
from urllib.parse import quote, unquote, urlencode, urlsplit

from b123_emulators.company import (
    BARRED_DEPARTMENTS,
    DEPARTMENTS,
    DISTRIBUTIONS,
    POSTABLE_TYPES,
    SUMMED,
    TOTAL_FROM,
    Company,
    Line,
    Year,
)
from b123_emulators.company import money as _money
from b123_emulators.company import to_decimal as _decimal
from b123_emulators.faults import MIB, gzip_bomb, padded_json
from b123_emulators.query import (
    Dnf,
    QueryError,
    Ranges,
    Selection,
    Term,
    intersect,
    matches,
    monotone_ranges,
    parse_filter,
    runs,
    union,
)
from b123_emulators.server import (
    EmulatorServer,
    HttpError,
    Request,
    RequestRecord,  # noqa: F401 - the type of `requests`, importable from here as before
    Response,
    dumps,
)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
RATE_LIMIT = 10_000  # tokens per 60 s, as in e-conomic's X-RateLimiting header
DEMO_TOKEN = "demo"
DRAFT_JOURNAL = 1
INSTALLATION_PATH = "/secure/api1/requestaccess.aspx"

_NOT_FOUND = "The requested resource was not found."
_REVOKED = ("The token is not valid or the grant has been revoked.",
            "Check X-AppSecretToken and X-AgreementGrantToken; a revoked grant needs a "
            "new agreement grant token.")

ENTRY_FIELDS: dict[str, type] = {"amount": Decimal, "currency": str, "date": dt.date,
                                 "entryNumber": int, "entryType": str, "text": str,
                                 "voucherNumber": int}
_ENTRY_GETTERS: dict[str, Callable[[Line], Any]] = {
    "amount": lambda e: _decimal(e.amount), "currency": lambda e: e.currency,
    "date": lambda e: e.date, "entryNumber": lambda e: e.number,
    "entryType": lambda e: e.entry_type, "text": lambda e: e.text,
    "voucherNumber": lambda e: e.voucher,
}
ACCOUNT_FIELDS = {"accountNumber": int, "accountType": str, "name": str, "barred": bool}
YEAR_FIELDS = {"year": str, "fromDate": dt.date, "toDate": dt.date, "closed": bool}
PERIOD_FIELDS = {"periodNumber": int, "fromDate": dt.date, "toDate": dt.date}
TOTAL_FIELDS = {"fromDate": dt.date, "toDate": dt.date, "totalInBaseCurrency": Decimal}
DEPARTMENT_FIELDS = {"departmentNumber": int, "name": str, "barred": bool}
DISTRIBUTION_FIELDS = {"departmentalDistributionNumber": int, "name": str,
                       "distributionType": str, "barred": bool}
JOURNAL_FIELDS = {"journalNumber": int, "name": str}
DRAFT_FIELDS = {"entryType": str, "date": dt.date, "amount": Decimal, "currency": str, "text": str}


def _url_key(year_key: str) -> str:
    """A year key as e-conomic writes it in URLs: 2022/2023 -> 2022_6_2023."""
    return year_key.replace("/", "_6_")


@dataclass
class Consent:
    """What the user does on the installation page: approves (for this agreement, or logged in to
    `agreement`, another one), or declines."""

    approve: bool = True
    agreement: int | None = None  # None: this emulator's agreement


# corrupt = <mode>: the first entry of a page carries a value that does not fit the warehouse.
UNFIT = {
    "huge_amount": ("amount", Decimal("12345678901234567.89")),  # 10^16 or more
    "amount_1e400": ("amount", "1E+400"),  # written as the JSON number 1e400
    "long_voucher": ("voucherNumber", "9" * 5000),
    "nul_in_text": ("text", "Faktura\u0000 1234"),
    "fractional_entry_number": ("entryNumber", Decimal("3000.5")),
    "not_an_object": (None, None),
}


class EconomicEmulator(EmulatorServer):
    """The fake e-conomic agreement: a company's books behind e-conomic's REST API.

    Set `tls = True` before start() to serve HTTPS (trust it with REQUESTS_CA_BUNDLE=emu.ca_file)."""

    server_version = "EconomicEmulator/1.0"
    thread_name = "economic-emulator"
    refusals = {
        "revoked": _REVOKED,
        "forbidden": ("The app's role does not give access to this resource.",
                      "An administrator must grant the app a role with access."),
        "rate_limited": ("Rate limit exceeded", "Slow down and retry later."),
        "server_error": ("An internal error occurred.", "Try again later."),
    }

    def __init__(self, entries: int = 2000, seed: int = 1, app_secret_token: str = "emu-app-secret",
                 grant_token: str = "emu-grant", years: list[str] | None = None,
                 closed_years: list[str] = (), drafts: int = 4, port: int = 0,
                 app_public_token: str = "emu-app-public"):
        self.company = Company(entries, seed, years, closed_years, drafts)
        super().__init__(port=port)
        self.app_secret_token, self.grant_token = app_secret_token, grant_token
        self.app_public_token = app_public_token
        self.seed = seed
        self.agreement_number = 100000 + seed
        self.consent = Consent()
        self.grants_issued: list[str] = []  # by the installation page, in order (for tests)
        self._grants_lock = threading.Lock()
        self._grants: dict[str, int] = {grant_token: self.agreement_number}  # grant -> agreement
        self._tokens_lock = threading.Lock()
        self._tokens, self._tokens_at = float(RATE_LIMIT), time.monotonic()

    # ------------------------------------------------------------------ truth for tests
    def years(self) -> list[str]:
        return [y.key for y in self.company.years]

    def entry_count(self) -> int:
        return self.company.entry_count()

    def posted_entries(self) -> Iterator[dict]:
        base = self._base
        for line in self.company.posted_lines():
            yield _entry_dict(line, base)

    def draft_entries(self) -> list[dict]:
        return [_draft_dict(line, self._base) for line in self.company.snapshot().drafts]

    def accounts(self) -> list[dict]:
        return [self._account_dict(a, balance, pending)
                for a, balance, pending in self.company.balances()]

    def sums_by_account_month(self) -> dict[tuple[int, dt.date], Decimal]:
        return {key: _decimal(cents) for key, cents in self.company.sums().items()}

    @property
    def installation_url(self) -> str:
        """The installation page, as a tenant's connection setting `installation_url`."""
        return self._base + INSTALLATION_PATH

    # ------------------------------------------------------------------ grants
    def revoke_grant(self, token: str | None = None) -> None:
        """Revokes `token`, or every grant of this agreement (the user who made it lost access)."""
        with self._grants_lock:
            for grant in [token] if token else [g for g, a in self._grants.items() if a == self.agreement_number]:
                self._grants.pop(grant, None)

    def issue_grant(self, agreement: int | None = None) -> str:
        """A new grant for this agreement (or `agreement`), as approving the app makes one."""
        token = f"grant-{secrets.token_urlsafe(24)}"
        with self._grants_lock:
            self._grants[token] = agreement or self.agreement_number
            self.grants_issued.append(token)
        return token

    # ------------------------------------------------------------------ mutations
    def book_entries(self, count: int, year: str | None = None,
                     on: dt.date | None = None) -> list[int]:
        """Books count/2 balanced vouchers into `year` (default: the latest), dated `on` or on a
        day picked from the entry number. Returns the new entry numbers."""
        return self.company.book_entries(count, year, on)

    def add_draft(self, count: int = 2, year: str | None = None) -> list[dict]:
        """Puts count/2 balanced vouchers in the draft journal (kassekladde); returns the lines."""
        return [_draft_dict(line, self._base) for line in self.company.add_draft(count, year)]

    def book_drafts(self) -> list[int]:
        """Books every draft line as a posted entry (keeping its voucher) and empties the journal."""
        return self.company.book_drafts()

    def add_account(self, number: int, name: str, account_type: str = "profitAndLoss") -> None:
        self.company.add_account(number, name, account_type)

    def rename_account(self, number: int, new_name: str) -> None:
        self.company.rename_account(number, new_name)

    def renumber_account(self, old: int, new: int) -> None:
        """Moves an account to a new number; its entries (posted and draft) move with it."""
        self.company.renumber_account(old, new)

    def delete_account(self, number: int) -> None:
        self.company.delete_account(number)

    # ------------------------------------------------------------------ public shapes
    @property
    def _base(self) -> str:
        return self.url or ""

    def _account_dict(self, a: dict, balance: int, pending: int) -> dict:
        base, n = self._base, a["number"]
        out: dict[str, Any] = {"accountNumber": n, "accountType": a["type"],
                               "balance": _decimal(balance), "draftBalance": _decimal(balance + pending),
                               "blockDirectEntries": a["type"] not in POSTABLE_TYPES,
                               "debitCredit": a["debitCredit"], "name": a["name"]}
        if a["barred"]:
            out["barred"] = True
        if a["vat"]:
            out["vatAccount"] = {"vatCode": a["vat"], "self": f"{base}/vat-accounts/{a['vat']}"}
        if n in SUMMED:
            lo, hi = SUMMED[n]
            out["accountsSummed"] = [{"fromAccount": {"accountNumber": lo, "self": f"{base}/accounts/{lo}"},
                                      "toAccount": {"accountNumber": hi, "self": f"{base}/accounts/{hi}"}}]
        if n in TOTAL_FROM:
            out["totalFromAccount"] = {"accountNumber": TOTAL_FROM[n],
                                       "self": f"{base}/accounts/{TOTAL_FROM[n]}"}
        out["accountingYears"] = f"{base}/accounts/{n}/accounting-years"
        out["self"] = f"{base}/accounts/{n}"
        return out

    def _year_dict(self, y: Year) -> dict:
        me = f"{self._base}/accounting-years/{_url_key(y.key)}"
        out: dict[str, Any] = {"year": y.key, "fromDate": y.first.isoformat(),
                               "toDate": y.last.isoformat()}
        if y.closed:
            out["closed"] = True
        out.update(entries=f"{me}/entries", totals=f"{me}/totals", periods=f"{me}/periods", self=me)
        return out

    def _periods(self, y: Year) -> list[dict]:
        me = f"{self._base}/accounting-years/{_url_key(y.key)}"
        return [{"periodNumber": i, "fromDate": first.isoformat(), "toDate": last.isoformat(),
                 "accountingYear": {"year": y.key, "self": me},
                 "entries": f"{me}/periods/{i}/entries", "self": f"{me}/periods/{i}"}
                for i, (first, last) in enumerate(y.months(), 1)]

    def _totals(self, y: Year) -> list[dict]:
        per_account: dict[int, int] = defaultdict(int)
        for (account, month), cents in self.company.sums().items():
            if y.first <= month <= y.last:
                per_account[account] += cents
        base = self._base
        return [{"account": {"accountNumber": a, "self": f"{base}/accounts/{a}"},
                 "fromDate": y.first.isoformat(), "toDate": y.last.isoformat(),
                 "totalInBaseCurrency": _decimal(per_account[a])} for a in sorted(per_account)]

    def _departments(self) -> list[dict]:
        base = self._base
        return [{"departmentNumber": n, "name": name, **({"barred": True} if n in BARRED_DEPARTMENTS else {}),
                 "self": f"{base}/departments/{n}"} for n, name in DEPARTMENTS]

    def _distributions(self) -> list[dict]:
        base = self._base
        return [{"departmentalDistributionNumber": n, "name": name,
                 "distributionType": "department" if len(parts) == 1 else "distribution",
                 "distributions": [{"department": {"departmentNumber": d, "self": f"{base}/departments/{d}"},
                                    "percentage": p} for d, p in parts],
                 **({"barred": True} if parts[0][0] in BARRED_DEPARTMENTS and len(parts) == 1 else {}),
                 "self": f"{base}/departmental-distributions/{n}"}
                for n, name, parts in DISTRIBUTIONS]

    def _journals(self) -> list[dict]:
        base = self._base
        return [{"journalNumber": n, "name": name, "entries": f"{base}/journals/{n}/entries",
                 "self": f"{base}/journals/{n}"}
                for n, name in ((DRAFT_JOURNAL, "Kassekladde"), (2, "Lønkladde"))]

    # ------------------------------------------------------------------ HTTP
    def route(self, request: Request) -> Response:
        if request.method != "GET":
            raise HttpError(405, "Only reading is emulated.", "Use GET.")
        if request.path == INSTALLATION_PATH:  # a browser: no token headers
            return self._installation(request)
        agreement = self._check_tokens(request.headers)
        self.gate()
        if agreement != self.agreement_number:
            if request.path.rstrip("/") == "/self":
                return Response(200, dumps(self._self_dict(agreement)).encode("utf-8"))
            raise HttpError(403, f"[emulator] The books of agreement {agreement} are not emulated.",
                            "Only /self answers for a grant of another agreement.")
        try:
            answer = self._dispatch(request)
        except QueryError as exc:
            raise HttpError(400, exc.message, exc.hint, **exc.extra) from None
        return answer if isinstance(answer, Response) else Response(200, answer.encode("utf-8"))

    def error_response(self, error: HttpError) -> Response:
        body = dumps({"message": error.message, "developerHint": error.hint,
                      "logId": uuid.uuid4().hex, "httpStatusCode": error.status,
                      "logTime": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "errors": {}, **error.extra})
        return Response(error.status, body.encode("utf-8"))

    def response_headers(self, response: Response) -> dict[str, str]:
        return {"X-CallCost": "1",
                "X-RateLimiting": f"token-limit-{RATE_LIMIT}-per-60-seconds: {self._take_token()}/{RATE_LIMIT}"}

    def _check_tokens(self, headers: Any) -> int:
        """The agreement the request's grant is for; 401 for a wrong app token or a revoked grant."""
        app, grant = headers.get("X-AppSecretToken"), headers.get("X-AgreementGrantToken")
        if (app, grant) == (DEMO_TOKEN, DEMO_TOKEN):
            return self.agreement_number
        with self._grants_lock:
            agreement = self._grants.get(grant) if app == self.app_secret_token else None
        if agreement is None:
            raise HttpError(401, *_REVOKED)
        return agreement

    def _installation(self, request: Request) -> Response:
        """The installation page after the user logged in and clicked approve (or declined)."""
        query = dict(request.params)
        if query.get("appPublicToken") != self.app_public_token:
            raise HttpError(400, "Unknown appPublicToken.", "Use the app's public token.")
        redirect = query.get("redirectUrl", "")
        if redirect and urlsplit(redirect).scheme not in ("http", "https"):
            raise HttpError(400, "redirectUrl must be an absolute http(s) URL.")
        if not self.consent.approve:
            # [?] What e-conomic does when the user declines is not documented: back without a token.
            return Response(302, b"", {"Location": redirect}) if redirect else Response(
                200, b"<p>Access was not granted.</p>", content_type="text/html; charset=utf-8")
        token = self.issue_grant(self.consent.agreement)
        if not redirect:  # without a redirectUrl e-conomic shows the token to the user
            return Response(200, f"<p>Token: {html.escape(token)}</p>".encode(),
                            content_type="text/html; charset=utf-8")
        # [seen] redirectUrl?token=<grant>; [?] a redirectUrl with a query of its own gets &token=.
        joiner = "&" if urlsplit(redirect).query else "?"
        return Response(302, b"", {"Location": redirect + joiner + urlencode({"token": token})})

    def _take_token(self) -> int:
        """[?] The bucket is reported, not enforced: 429s come only from the faults."""
        with self._tokens_lock:
            now = time.monotonic()
            self._tokens = min(RATE_LIMIT, self._tokens + (now - self._tokens_at) * RATE_LIMIT / 60)
            self._tokens, self._tokens_at = max(0.0, self._tokens - 1), now
            return int(self._tokens)

    def _dispatch(self, request: Request) -> str | Response:
        path, params, raw = request.path, request.params, request.target
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        collection = lambda items, fields, sortable=True: self._collection(
            items, fields, path, params, raw, sortable)
        match parts:
            case [] | ["self"]:
                return dumps(self._self_dict(self.agreement_number))
            case ["accounts"]:
                return collection(self.accounts(), ACCOUNT_FIELDS)
            case ["accounts", number]:
                return dumps(self._one(self.accounts(), "accountNumber", number))
            case ["accounting-years"]:
                return collection([self._year_dict(y) for y in self.company.years], YEAR_FIELDS)
            case ["accounting-years", key]:
                return dumps(self._year_dict(self._url_year(key)))
            case ["accounting-years", key, "periods"]:
                return collection(self._periods(self._url_year(key)), PERIOD_FIELDS)
            case ["accounting-years", key, "periods", number]:
                return dumps(self._one(self._periods(self._url_year(key)), "periodNumber", number))
            case ["accounting-years", key, "periods", number, "entries"]:
                period = self._one(self._periods(self._url_year(key)), "periodNumber", number)
                return self._entries_page(self._url_year(key), request,
                                          (period["fromDate"], period["toDate"]))
            case ["accounting-years", key, "entries"]:
                return self._entries_page(self._url_year(key), request)
            case ["accounting-years", key, "entries", number]:
                return self._one_entry(self._url_year(key), number)
            case ["accounting-years", key, "totals"]:
                return collection(self._totals(self._url_year(key)), TOTAL_FIELDS)
            case ["departments"]:
                return collection(self._departments(), DEPARTMENT_FIELDS)
            case ["departments", number]:
                return dumps(self._one(self._departments(), "departmentNumber", number))
            case ["departmental-distributions"]:
                return collection(self._distributions(), DISTRIBUTION_FIELDS)
            case ["departmental-distributions", number]:
                return dumps(self._one(self._distributions(), "departmentalDistributionNumber", number))
            case ["journals"]:
                return collection(self._journals(), JOURNAL_FIELDS)
            case ["journals", number]:
                return dumps(self._one(self._journals(), "journalNumber", number))
            case ["journals", number, "entries"]:
                self._one(self._journals(), "journalNumber", number)
                lines = self.draft_entries() if number == str(DRAFT_JOURNAL) else []
                return collection(lines, DRAFT_FIELDS, sortable=False)
        raise HttpError(404, _NOT_FOUND, f"No resource at {path}.")

    def _self_dict(self, agreement: int) -> dict:
        base = self._base
        return {"agreementNumber": agreement,
                "company": {"name": "Emulator Handel ApS", "vatNumber": "DK12345678"},
                "userName": "emulator", "application": {"name": "budget123"},
                "accounts": f"{base}/accounts", "accountingYears": f"{base}/accounting-years",
                "self": f"{base}/self"}

    def _url_year(self, url_key: str) -> Year:
        key = url_key.replace("_6_", "/")
        for year in self.company.years:
            if year.key == key:
                return year
        raise HttpError(404, _NOT_FOUND, f"There is no accounting year '{key}'.")

    @staticmethod
    def _one(items: list[dict], field: str, number: str) -> dict:
        for item in items:
            if str(item[field]) == number:
                return item
        raise HttpError(404, _NOT_FOUND, f"No item with {field} {number}.")

    # ------------------------------------------------------------------ paging
    def _paging(self, params: list[tuple[str, str]]) -> tuple[int, int]:
        query = dict(params)
        try:
            skip, size = int(query.get("skippages", 0)), int(query.get("pagesize", DEFAULT_PAGE_SIZE))
        except ValueError:
            raise HttpError(400, "skippages and pagesize must be whole numbers.") from None
        if size > MAX_PAGE_SIZE or size < 1 or skip < 0:
            raise HttpError(400, f"pagesize must be 1 to {MAX_PAGE_SIZE} and skippages at least 0.",
                            f"maxPageSizeAllowed is {MAX_PAGE_SIZE}.")
        return skip, size

    def _envelope(self, items_json: str, params: list[tuple[str, str]], path: str, raw: str,
                  results: int, without_filter: int, foreign: str | None = None,
                  endless: bool = False) -> str:
        """The collection envelope. nextPage: the page itself with faults.self_loop_next_page;
        else the next page at the `foreign` origin when given (even past the last page); else the
        next page, always when `endless`, otherwise while there are more results."""
        skip, size = self._paging(params)
        kept = [(k, v) for k, v in params if k not in ("skippages", "pagesize")]
        relative = lambda page: (f"{path}?" + urlencode([("skippages", page), ("pagesize", size), *kept],
                                                       safe="$:*[],", quote_via=quote))
        link = lambda page: self._base + relative(page)
        last = max(0, (results - 1) // size)
        pagination: dict[str, Any] = {"maxPageSizeAllowed": MAX_PAGE_SIZE, "skipPages": skip,
                                      "pageSize": size, "results": results,
                                      "resultsWithoutFilter": without_filter, "firstPage": link(0)}
        if self.faults.self_loop_next_page:
            pagination["nextPage"] = self._base + raw
        elif foreign:
            pagination["nextPage"] = foreign.rstrip("/") + relative(skip + 1)
        elif endless or (skip + 1) * size < results:
            pagination["nextPage"] = link(skip + 1)
        pagination["lastPage"] = link(last)
        return (f'{{"collection":[{items_json}],"pagination":{dumps(pagination)},'
                f'"self":{encode_basestring(self._base + raw)}}}')

    def _collection(self, items: list[dict], fields: dict[str, type], path: str,
                    params: list[tuple[str, str]], raw: str, sortable: bool) -> str:
        """Filter, sort and page a small collection held as public dicts."""
        query = dict(params)
        skip, size = self._paging(params)
        dnf = parse_filter(query.get("filter"), fields)
        # Booleans appear only when true, so a missing one is false.
        value = lambda item, f: item.get(f, False if fields[f] is bool else None)
        chosen = [i for i in items if dnf is None or matches(dnf, lambda f: value(i, f))]
        if query.get("sort") and sortable:
            field = query["sort"].lstrip("-")
            if field not in fields:
                raise HttpError(400, f"The property '{field}' cannot be used for sorting.",
                                allowedSortingFields=sorted(fields))
            chosen.sort(key=lambda i: (i.get(field) is None, i.get(field)),
                        reverse=query["sort"].startswith("-"))
        page = chosen[skip * size:(skip + 1) * size]
        return self._envelope(",".join(dumps(i) for i in page), params, path, raw, len(chosen),
                              len(items))

    # ------------------------------------------------------------------ entries
    def _entries_page(self, year: Year, request: Request,
                      dates: tuple[str, str] | None = None) -> str | Response:
        origin = self.faults.once("redirect_to")
        if origin:
            return Response(302, b"", {"Location": origin.rstrip("/") + request.target})
        params, path, raw = request.params, request.path, request.target
        query = dict(params)
        skip, size = self._paging(params)
        dnf = parse_filter(query.get("filter"), ENTRY_FIELDS)
        order = query.get("sort", "")
        if order not in ("", "date", "-date", "entryNumber", "-entryNumber"):
            raise HttpError(400, f"Entries cannot be sorted by '{order}'.",
                            allowedSortingFields=["date", "entryNumber"])
        remap, booked, drafts, next_number = self.company.snapshot()
        extras = [line for line in booked if line.year == year.key]
        if self.faults.leak_drafts:  # a broken source serving its draft journal as if posted
            extras += [line._replace(number=next_number + i) for i, line in enumerate(drafts)
                       if line.year == year.key]
        selection, extras, without_filter = self._select(year, dnf, extras, remap, dates)
        total = selection.count + len(extras)
        endless = self.faults.endless_pages  # past the last page, pages of entries never booked
        indexes = list(range(skip * size, (skip + 1) * size if endless else min(total, (skip + 1) * size)))
        if self.faults.repeat_boundary_entry and skip > 0 and indexes and skip * size - 1 < total:
            indexes.insert(0, skip * size - 1)  # the last entry of the page before, again
        real = [i for i in indexes if i < total]
        lines = self._arrange(selection, extras, order, total, real, remap)
        lines += [self.company.phantom_line(i - total, year, remap) for i in indexes[len(real):]]
        items = self._corrupt([_entry_json(line, self._base) for line in lines])
        body = self._envelope(",".join(items), params, path, raw, total, without_filter,
                              # a page of entries, not a count (pagesize 1), leads away
                              foreign=self.faults.once("foreign_next_page") if size > 1 else None,
                              endless=endless)
        if size > 1:  # a page of entries, not a count
            self.faults.page_wait(lines[0].number if lines else None)
        to_book = self.faults.page_served()
        if to_book:
            # Dated on the year's first day: it lands before everything already paged, so the
            # client's next page starts earlier than it should (the page-boundary duplicates).
            self.book_entries(to_book, year.key, on=year.first)
        if self.faults.corrupt == "malformed_json":
            body = body[: len(body) // 2]
        if self.faults.gzip_bomb_mb:
            pieces, length = gzip_bomb(self.faults.gzip_bomb_mb * MIB, body.encode("utf-8"))
            return Response(200, pieces, {"Content-Encoding": "gzip"}, length)
        if self.faults.huge_page_mb:
            pieces, length = padded_json(body.encode("utf-8"), self.faults.huge_page_mb * MIB)
            return Response(200, pieces, None, length)
        return body

    def _select(self, year: Year, dnf: Dnf | None, extras: list[Line], remap: dict[int, int],
                dates: tuple[str, str] | None) -> tuple[Selection, list[Line], int]:
        """The year's generated entries passing the filter, as ranges computed from the filter
        where it speaks of entryNumber, voucherNumber or date (all rise with n), and by testing
        each candidate otherwise; plus the extra lines that pass. Also the count before filtering."""
        lo, hi = year.n_range
        base: Ranges = [(lo, hi)] if lo <= hi else []
        if dates:
            base = intersect(base, self._term_ranges(year, Term("date", "gte", dates[0]), lo, hi))
            base = intersect(base, self._term_ranges(year, Term("date", "lte", dates[1]), lo, hi))
            extras = [e for e in extras if dates[0] <= e.date <= dates[1]]
        without_filter = sum(b - a + 1 for a, b in base) + len(extras)
        if dnf is None:
            return Selection(base), extras, without_filter
        candidates, needs_test = [], False
        for conj in dnf:
            ranges = base
            for term in conj:
                if term.field in ("entryNumber", "voucherNumber", "date"):
                    ranges = intersect(ranges, self._term_ranges(year, term, lo, hi))
                else:
                    needs_test = True
            candidates.append(ranges)
        ranges = union(*candidates)
        passes = lambda line: matches(dnf, lambda f: _ENTRY_GETTERS[f](line))
        if needs_test:  # O(candidates): only filters on amount, text, ... get here
            line = self.company.line
            ranges = runs(n for n in Selection(ranges) if passes(line(n, remap)))
        return Selection(ranges), [e for e in extras if passes(e)], without_filter

    @staticmethod
    def _term_ranges(year: Year, term: Term, lo: int, hi: int) -> Ranges:
        """Entry numbers in lo..hi whose field satisfies the term (the field never decreases with n)."""
        key: Callable[[int], Any] = {
            "entryNumber": lambda n: n,
            "voucherNumber": lambda n: (n + 1) >> 1,
            "date": lambda n: year.date_of((n + 1) >> 1),
        }[term.field]
        return monotone_ranges(term, lo, hi, key)

    def _arrange(self, selection: Selection, extras: list[Line], order: str, total: int,
                 indexes: list[int], remap: dict[int, int]) -> list[Line]:
        """The lines at `indexes` of the merged, sorted sequence, without building it.

        Generated entries are in both date and number order already. By number, the extra lines
        (all numbered higher) follow them; by date, an extra line goes after every generated entry
        dated on or before its date."""
        if order.lstrip("-") == "entryNumber":
            extras = sorted(extras, key=lambda e: e.number)
            slots = [selection.count + i for i in range(len(extras))]
        else:
            extras = sorted(extras, key=lambda e: (e.date, e.number))
            slots = [self._generated_up_to(selection, e.date) + i for i, e in enumerate(extras)]
        line, out = self.company.line, []
        for index in indexes:
            at = total - 1 - index if order.startswith("-") else index
            j = bisect_left(slots, at)
            if j < len(slots) and slots[j] == at:
                out.append(extras[j])
            else:
                out.append(line(selection.nth(at - j), remap))
        return out

    def _generated_up_to(self, selection: Selection, date: str) -> int:
        """How many selected generated entries are dated on or before `date`."""
        numbers = range(1, self.company.generated + 1)
        last = bisect_right(numbers, date, key=self.company.generated_date)
        return selection.count_le(last)

    def _corrupt(self, items: list[str]) -> list[str]:
        mode = self.faults.corrupt
        if not items or mode not in ("non_numeric_amount", "unknown_account", "missing_field", *UNFIT):
            return items
        if mode == "not_an_object":
            return ["[1, 2]"] + items[1:]
        entry = json.loads(items[0], parse_float=Decimal)
        if mode in UNFIT:
            field, value = UNFIT[mode]
            if field == "amount":
                entry["amount"] = entry["amountInBaseCurrency"] = value
            else:
                entry[field] = value
            return [dumps(entry).replace('"1E+400"', "1e400")] + items[1:]
        if mode == "non_numeric_amount":
            entry["amount"] = entry["amountInBaseCurrency"] = "abc"
        elif mode == "missing_field":
            del entry["account"]
        else:
            with self.company.lock:
                unknown = max(self.company.accounts) + 10_000
            entry["account"] = {"accountNumber": unknown, "self": f"{self._base}/accounts/{unknown}"}
        return [dumps(entry)] + items[1:]

    def _one_entry(self, year: Year, number: str) -> str:
        if not number.isdigit():
            raise HttpError(404, _NOT_FOUND, f"No entry {number}.")
        n = int(number)
        lo, hi = year.n_range
        remap, booked = self.company.snapshot()[:2]
        if lo <= n <= hi:
            return _entry_json(self.company.line(n, remap), self._base)
        for line in booked:
            if line.number == n and line.year == year.key:
                return _entry_json(line, self._base)
        raise HttpError(404, _NOT_FOUND, f"No entry {n} in accounting year {year.key}.")


# ---------------------------------------------------------------------------------------------------
def _entry_json(e: Line, base: str) -> str:
    """A posted entry as JSON text, written directly: the hot path when paging a million entries.
    Must stay equal to _entry_dict (the tests check)."""
    extra = ""
    if e.distribution:
        extra += (f',"departmentalDistribution":{{"departmentalDistributionNumber":{e.distribution},'
                  f'"self":"{base}/departmental-distributions/{e.distribution}"}}')
    if e.vat:
        extra += f',"vatAccount":{{"vatCode":"{e.vat}","self":"{base}/vat-accounts/{e.vat}"}}'
    year = e.year.replace("/", "_6_")
    return (f'{{"entryNumber":{e.number},"entryType":"{e.entry_type}","voucherNumber":{e.voucher},'
            f'"date":"{e.date}","account":{{"accountNumber":{e.account},'
            f'"self":"{base}/accounts/{e.account}"}},"amount":{_money(e.amount)},'
            f'"amountInBaseCurrency":{_money(e.base)},"currency":"{e.currency}",'
            f'"text":{encode_basestring(e.text)}{extra},'
            f'"accountingYear":{{"year":"{e.year}","self":"{base}/accounting-years/{year}"}},'
            f'"self":"{base}/accounting-years/{year}/entries/{e.number}"}}')


def _entry_dict(e: Line, base: str) -> dict:
    year = _url_key(e.year)
    out: dict[str, Any] = {
        "entryNumber": e.number, "entryType": e.entry_type, "voucherNumber": e.voucher,
        "date": e.date, "account": {"accountNumber": e.account, "self": f"{base}/accounts/{e.account}"},
        "amount": _decimal(e.amount), "amountInBaseCurrency": _decimal(e.base),
        "currency": e.currency, "text": e.text}
    if e.distribution:
        out["departmentalDistribution"] = {
            "departmentalDistributionNumber": e.distribution,
            "self": f"{base}/departmental-distributions/{e.distribution}"}
    if e.vat:
        out["vatAccount"] = {"vatCode": e.vat, "self": f"{base}/vat-accounts/{e.vat}"}
    out["accountingYear"] = {"year": e.year, "self": f"{base}/accounting-years/{year}"}
    out["self"] = f"{base}/accounting-years/{year}/entries/{e.number}"
    return out


def _draft_dict(e: Line, base: str) -> dict:
    year = _url_key(e.year)
    out: dict[str, Any] = {
        "journal": {"journalNumber": DRAFT_JOURNAL, "self": f"{base}/journals/{DRAFT_JOURNAL}"},
        "entryType": e.entry_type,
        "voucher": {"voucherNumber": e.voucher,
                    "accountingYear": {"year": e.year, "self": f"{base}/accounting-years/{year}"}},
        "account": {"accountNumber": e.account, "self": f"{base}/accounts/{e.account}"},
        "date": e.date, "amount": _decimal(e.amount), "amountBaseCurrency": _decimal(e.base),
        "currency": e.currency, "text": e.text}
    if e.distribution:
        out["departmentalDistribution"] = {
            "departmentalDistributionNumber": e.distribution,
            "self": f"{base}/departmental-distributions/{e.distribution}"}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated e-conomic agreement on loopback.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--app-secret-token", default="emu-app-secret")
    parser.add_argument("--grant-token", default="emu-grant")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args(argv)
    emulator = EconomicEmulator(entries=args.entries, seed=args.seed, port=args.port,
                                app_secret_token=args.app_secret_token, grant_token=args.grant_token)
    emulator.faults.latency = args.latency
    url = emulator.start()
    print(f"e-conomic emulator at {url}  ({emulator.entry_count()} posted entries)")
    print(f"  X-AppSecretToken: {args.app_secret_token}")
    print(f"  X-AgreementGrantToken: {args.grant_token}   (or both headers 'demo')")
    print("Ctrl-C stops it.", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
