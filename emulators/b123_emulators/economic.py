"""An emulator of Visma e-conomic's legacy REST API (read side), served over real HTTP on loopback.

Used by end-to-end tests, the demo and the benchmarks. It serves one deterministic Danish company
and scales to a million posted entries without holding them in memory: entry n is *computed* from n
(a 64-bit hash of its voucher number picks the kind, accounts, amount, text...), so only what happens
later - bookings, drafts, account edits - is stored. Shapes follow
/work/shared/reference/accounting-apis.md section 1; choices the vendor does not document are marked
[?] in comments.

    with EconomicEmulator(entries=2000, seed=1) as emu:
        requests.get(emu.url + "/accounts", headers={"X-AppSecretToken": "emu-app-secret",
                                                      "X-AgreementGrantToken": "emu-grant"})

Run it by hand: python -m b123_emulators.economic --port 8765 --entries 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from json.encoder import encode_basestring
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
RATE_LIMIT = 10_000  # tokens per 60 s, as in e-conomic's X-RateLimiting header
DEMO_TOKEN = "demo"
DRAFT_JOURNAL = 1

# ---------------------------------------------------------------------------------------------------
# The company. Account tuples: (number, type, name, debitCredit, vatCode).
CHART: tuple[tuple[int, str, str, str, str | None], ...] = (
    (1000, "headingStart", "RESULTATOPGØRELSE", "debit", None),
    (1010, "heading", "Omsætning", "credit", None),
    (1100, "profitAndLoss", "Salg af varer", "credit", "U25"),
    (1110, "profitAndLoss", "Salg af ydelser", "credit", "U25"),
    (1120, "profitAndLoss", "Salg af varer EU", "credit", "UEUV"),
    (1190, "sumInterval", "Omsætning i alt", "credit", None),
    (1200, "heading", "Vareforbrug", "debit", None),
    (1300, "profitAndLoss", "Vareforbrug", "debit", "I25"),
    (1310, "profitAndLoss", "Fragt", "debit", "I25"),
    (1390, "sumInterval", "Vareforbrug i alt", "debit", None),
    (1400, "totalFrom", "Dækningsbidrag", "credit", None),
    (2000, "heading", "Personaleomkostninger", "debit", None),
    (2200, "profitAndLoss", "Løn", "debit", None),
    (2210, "profitAndLoss", "Pension", "debit", None),
    (2220, "profitAndLoss", "ATP", "debit", None),
    (2700, "heading", "Lokaleomkostninger", "debit", None),
    (2800, "profitAndLoss", "Husleje", "debit", None),
    (2810, "profitAndLoss", "El og varme", "debit", "I25"),
    (2900, "heading", "Administrationsomkostninger", "debit", None),
    (3000, "profitAndLoss", "Kontorartikler", "debit", "I25"),
    (3010, "profitAndLoss", "Telefon og internet", "debit", "I25"),
    (3020, "profitAndLoss", "Revisor", "debit", "I25"),
    (3030, "profitAndLoss", "Forsikringer", "debit", None),
    (3040, "profitAndLoss", "Software og licenser", "debit", "I25"),
    (3050, "profitAndLoss", "Bankgebyrer", "debit", None),
    (3060, "profitAndLoss", "Reklame og markedsføring", "debit", "I25"),  # never posted to
    (3070, "profitAndLoss", "Gammel kontorkonto", "debit", None),  # barred, never posted to
    (3500, "profitAndLoss", "Afskrivninger", "debit", None),
    (3600, "profitAndLoss", "Renteudgifter", "debit", None),
    (3900, "totalFrom", "Årets resultat", "credit", None),
    (5000, "headingStart", "BALANCE", "debit", None),
    (5100, "heading", "Aktiver", "debit", None),
    (5500, "status", "Inventar", "debit", None),
    (5600, "status", "Debitorer", "debit", None),
    (5800, "status", "Bank", "debit", None),
    (5810, "status", "Kasse", "debit", None),
    (5890, "sumInterval", "Aktiver i alt", "debit", None),
    (6000, "heading", "Passiver", "credit", None),
    (6100, "status", "Egenkapital", "credit", None),
    (6500, "status", "Kreditorer", "credit", None),
    (6700, "status", "Salgsmoms", "credit", None),
    (6710, "status", "Købsmoms", "debit", None),
    (6720, "status", "Momsafregning", "credit", None),
    (6890, "sumInterval", "Passiver i alt", "credit", None),
    (6990, "sumAlpha", "Balancekontrol", "debit", None),
)
BARRED_ACCOUNTS = frozenset({3070})
SUMMED = {1190: (1100, 1120), 1390: (1300, 1310), 5890: (5500, 5810), 6890: (6100, 6720)}
TOTAL_FROM = {1400: 1000, 3900: 1000}
POSTABLE_TYPES = ("profitAndLoss", "status")
_CHART_NAME = {number: name for number, _, name, _, _ in CHART}
_CHART_VAT = {number: vat for number, _, _, _, vat in CHART}
_PNL = frozenset(number for number, kind, *_ in CHART if kind == "profitAndLoss")

DEPARTMENTS = ((1, "Salg"), (2, "Administration"), (3, "Produktion"), (4, "Lager"), (5, "Udvikling"))
BARRED_DEPARTMENTS = frozenset({5})
# (number, name, [(department, percentage)]); one per department at 100 %, then the split ones.
DISTRIBUTIONS = tuple((n, name, [(n, 100)]) for n, name in DEPARTMENTS) + (
    (6, "Fælles salg og administration", [(1, 50), (2, 50)]),
    (7, "Produktion og lager", [(3, 60), (4, 40)]),
)
_ACTIVE_DISTRIBUTIONS = (1, 2, 3, 4, 6, 7)

CUSTOMERS = (
    "Jensen & Søn ApS", "Nordisk Træ A/S", "Østergaard Byg ApS", "Københavns Kaffebar",
    "Ålborg Maskinfabrik A/S", "Fynsk Grønt I/S", "Hansen Rådgivning", "Møller Transport ApS",
    "Lykke Design", "Sørensen El-service", "Bæk & Bølge ApS", "Skovgaard Tømrer",
)
SUPPLIERS = (
    "Ørsted Salg & Service", "TDC Erhverv", "Dansk Papir ApS", "PostNord Danmark", "DSV Road A/S",
    "Microsoft Danmark ApS", "Tryg Forsikring", "Beierholm Revision", "Lemvigh-Müller",
    "Ejendomsselskabet Nørrebro",
)
MONTHS = ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september",
          "oktober", "november", "december")


class _Kind(NamedTuple):
    """One kind of voucher the generator books: its type, account pairs, amount range and text."""
    entry_type: str
    weight: int
    pairs: tuple[tuple[int, int], ...]  # (debit account, credit account)
    min_cents: int
    max_cents: int
    foreign: bool  # may be in EUR
    text: Callable[[int, str, str, str], str]  # (invoice no, party, account name, "marts 2024")


_EXPENSES = (1300, 1310, 2800, 2810, 3000, 3010, 3020, 3030, 3040)
KINDS = (
    _Kind("customerInvoice", 30, ((5600, 1100), (5600, 1110), (5600, 1120)), 500_00, 80_000_00,
          True, lambda no, c, acc, month: f"Faktura {no} {c}"),
    _Kind("supplierInvoice", 25, tuple((e, 6500) for e in _EXPENSES), 100_00, 40_000_00, True,
          lambda no, s, acc, month: f"Købsfaktura {no} {s} - {acc}"),
    _Kind("customerPayment", 15, ((5800, 5600),), 500_00, 80_000_00, True,
          lambda no, c, acc, month: f"Indbetaling fra {c}, faktura {no}"),
    _Kind("supplierPayment", 12, ((6500, 5800),), 100_00, 40_000_00, True,
          lambda no, s, acc, month: f"Betaling til {s}"),
    _Kind("financeVoucher", 15, ((2200, 5800), (2210, 5800), (2220, 5800), (3050, 5800),
                                 (3600, 5800), (5810, 5800)), 50_00, 60_000_00, False,
          lambda no, p, acc, month: f"{acc} {month}"),
    _Kind("systemEntry", 3, ((6700, 6720), (6720, 6710), (3500, 5500)), 1_000_00, 100_000_00,
          False, lambda no, p, acc, month: f"{acc} {month}"),
)
# The first voucher of every year carries the opening balance.
OPENING = _Kind("openingEntry", 0, ((5800, 6100),), 100_000_00, 1_000_000_00, False,
                lambda no, p, acc, month: f"Primobeløb {month.split()[-1]}")
# One slot per unit of weight: (hash % len) picks a kind with the weights above.
_KIND_SLOTS = tuple(kind for kind in KINDS for _ in range(kind.weight))

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread, run-to-run stable 64-bit hash of an int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _money(cents: int) -> str:
    """Exact JSON number literal for an amount in øre: 123450 -> 1234.50 (never through float)."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole}.{rest:02d}"


def _decimal(cents: int) -> Decimal:
    return Decimal(_money(cents))


def dumps(value: Any) -> str:
    """JSON text with Decimals written as exact number literals (json.dumps cannot do that)."""
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode_basestring(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------
# Accounting years
class _Year(NamedTuple):
    key: str  # "2024" or "2022/2023"
    first: dt.date
    last: dt.date
    closed: bool
    vstart: int  # first generated voucher number of the year
    vcount: int  # number of generated vouchers in the year
    dates: tuple[str, ...]  # ISO date of each day of the year, by day index

    @property
    def url_key(self) -> str:
        return self.key.replace("/", "_6_")

    @property
    def n_range(self) -> tuple[int, int]:
        """Generated entry numbers of the year (inclusive; empty when lo > hi)."""
        return 2 * self.vstart - 1, 2 * (self.vstart + self.vcount) - 2

    def date_of(self, voucher: int) -> str:
        # Vouchers are spread evenly over the days, so dates never decrease with the number.
        return self.dates[(voucher - self.vstart) * len(self.dates) // self.vcount]

    def months(self) -> list[tuple[dt.date, dt.date]]:
        out, start = [], self.first
        while start <= self.last:
            nxt = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            out.append((start, min(self.last, nxt - dt.timedelta(days=1))))
            start = nxt
        return out


def _year_span(key: str) -> tuple[dt.date, dt.date]:
    if re.fullmatch(r"\d{4}", key):
        return dt.date(int(key), 1, 1), dt.date(int(key), 12, 31)
    match = re.fullmatch(r"(\d{4})/(\d{4})", key)
    if match and int(match[2]) == int(match[1]) + 1:
        # [?] A broken year is taken to run 1 July to 30 June.
        return dt.date(int(match[1]), 7, 1), dt.date(int(match[2]), 6, 30)
    raise ValueError(f"year key {key!r} is neither 'YYYY' nor 'YYYY/YYYY+1'")


def _layout_years(keys: list[str], closed: set[str], vouchers: int) -> list[_Year]:
    """Spreads the generated vouchers over the years in proportion to their length."""
    spans = sorted((_year_span(k), k) for k in keys)
    for (a, _), (b, _) in zip(spans, spans[1:]):
        if b[0] <= a[1]:
            raise ValueError("accounting years overlap")
    total_days = sum((last - first).days + 1 for (first, last), _ in spans)
    years, days_before = [], 0
    for (first, last), key in spans:
        days = (last - first).days + 1
        vstart = 1 + vouchers * days_before // total_days
        vend = 1 + vouchers * (days_before + days) // total_days
        dates = tuple((first + dt.timedelta(d)).isoformat() for d in range(days))
        years.append(_Year(key, first, last, key in closed, vstart, vend - vstart, dates))
        days_before += days
    return years


# ---------------------------------------------------------------------------------------------------
class Line(NamedTuple):
    """One posted entry or draft line, amounts in øre. number is 0 for a draft line."""
    number: int
    entry_type: str
    voucher: int
    date: str
    account: int
    amount: int
    base: int  # amountInBaseCurrency
    currency: str
    text: str
    distribution: int  # departmentalDistributionNumber, 0 = none
    vat: str | None
    year: str


class RequestRecord(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    status: int


class _HttpError(Exception):
    def __init__(self, status: int, message: str, hint: str = "", headers: dict | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint
        self.headers, self.extra = headers or {}, extra


_NOT_FOUND = "The requested resource was not found."


class Faults:
    """Switchable failures. All off by default; counters are consumed one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.revoked = False
        self.forbidden = False
        self.page_delay = 0.0
        self.repeat_boundary_entry = False
        self.leak_drafts = False
        self.corrupt: str | None = None  # malformed_json | non_numeric_amount | unknown_account | missing_field
        self._rate_limited, self._retry_after = 0, None
        self._server_errors, self._server_status = 0, 503
        self._book_while_paging: tuple[int, int] | None = None
        self._pages_served = 0

    def rate_limit(self, n: int, retry_after: float | None = 1) -> None:
        with self._lock:
            self._rate_limited, self._retry_after = n, retry_after

    def server_errors(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._server_errors, self._server_status = n, status

    @property
    def book_while_paging(self) -> tuple[int, int] | None:
        return self._book_while_paging

    @book_while_paging.setter
    def book_while_paging(self, value: tuple[int, int] | None) -> None:
        with self._lock:
            self._book_while_paging, self._pages_served = value, 0

    def _gate(self) -> None:
        """Raises the error this request must get, if any (consuming a counted fault)."""
        if self.revoked:
            raise _unauthorized()
        if self.forbidden:
            raise _HttpError(403, "The app's role does not give access to this resource.",
                             "An administrator must grant the app a role with access.")
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                headers = {} if self._retry_after is None else {"Retry-After": str(self._retry_after)}
                raise _HttpError(429, "Rate limit exceeded", "Slow down and retry later.", headers)
            if self._server_errors > 0:
                self._server_errors -= 1
                raise _HttpError(self._server_status, "An internal error occurred.",
                                 "Try again later.")

    def _page_served(self) -> int:
        """Counts an entries page; returns how many entries to book now (0 mostly)."""
        with self._lock:
            if self._book_while_paging is None:
                return 0
            self._pages_served += 1
            after, count = self._book_while_paging
            if self._pages_served != after:
                return 0
            self._book_while_paging = None  # once
            return count


def _unauthorized() -> _HttpError:
    return _HttpError(401, "The token is not valid or the grant has been revoked.",
                      "Check X-AppSecretToken and X-AgreementGrantToken; a revoked grant needs a "
                      "new agreement grant token.")


# ---------------------------------------------------------------------------------------------------
# Filters: "field$op:value" terms joined with $and: / $or: ($and: binds tighter [?]).
_TERM = re.compile(r"(\w+)\$(eq|ne|gte|gt|lte|lt|in|nin|like):(.*)", re.S)


class _Term(NamedTuple):
    field: str
    op: str
    value: Any  # converted to the field's type; a list for in/nin; a regex for like


def _parse_filter(text: str | None, fields: dict[str, type]) -> list[list[_Term]] | None:
    """Parses a filter into OR-of-ANDs; 400 for bad syntax or a field that cannot be filtered on."""
    if not text:
        return None
    dnf = []
    for part in text.split("$or:"):
        conj = []
        for raw in part.split("$and:"):
            match = _TERM.fullmatch(raw)
            if not match:
                raise _HttpError(400, f"The filter term '{raw}' is not valid.",
                                 "Use field$operator:value, e.g. entryNumber$gt:123.")
            field, op, value = match.groups()
            if field not in fields:
                raise _HttpError(400, f"The property '{field}' cannot be used for filtering.",
                                 "Filter on one of allowedFilteringFields.",
                                 allowedFilteringFields=sorted(fields))
            conj.append(_Term(field, op, _filter_value(op, value, fields[field])))
        dnf.append(conj)
    return dnf


def _filter_value(op: str, raw: str, kind: type) -> Any:
    if op == "like":
        # [?] '*' and '%' are wildcards; without one, the value may appear anywhere. Case-insensitive.
        pattern = ".*".join(re.escape(p) for p in re.split(r"[*%]", raw))
        return re.compile(pattern if re.search(r"[*%]", raw) else f".*{pattern}.*", re.I | re.S)
    if op in ("in", "nin"):
        items = raw.strip()[1:-1] if raw.strip().startswith("[") else raw
        return [_convert(item.strip(), kind) for item in items.split(",") if item.strip()]
    return _convert(raw, kind)


def _convert(raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind is dt.date:
            return dt.date.fromisoformat(raw).isoformat()  # compared as ISO text
        return kind(raw)
    except (ValueError, InvalidOperation):
        raise _HttpError(400, f"The filter value '{raw}' is not valid.",
                         f"Expected a {kind.__name__}.") from None


def _match(term: _Term, x: Any) -> bool:
    op, v = term.op, term.value
    if op == "like":
        return x is not None and v.fullmatch(str(x)) is not None
    if op == "in":
        return x in v
    if op == "nin":
        return x not in v
    if op == "eq":
        return x == v
    if op == "ne":
        return x != v
    if x is None:
        return False
    return {"gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[op]


def _matches(dnf: list[list[_Term]], get: Callable[[str], Any]) -> bool:
    return any(all(_match(t, get(t.field)) for t in conj) for conj in dnf)


# ---------------------------------------------------------------------------------------------------
# Sets of entry numbers as sorted, disjoint, inclusive ranges: how filters stay O(page) at 1M.
Ranges = list[tuple[int, int]]


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _union(*sets: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(r for s in sets for r in s):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(a: Ranges, lo: int, hi: int) -> Ranges:
    out, at = [], lo
    for a_lo, a_hi in a:
        if a_lo > at:
            out.append((at, a_lo - 1))
        at = max(at, a_hi + 1)
    if at <= hi:
        out.append((at, hi))
    return out


def _runs(numbers: Iterator[int]) -> Ranges:
    out: Ranges = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


class _Selection:
    """Ranges with O(log) count, n-th element and rank."""

    def __init__(self, ranges: Ranges):
        self.ranges = [(a, b) for a, b in ranges if a <= b]
        self.starts = [a for a, _ in self.ranges]
        self.before, total = [], 0
        for a, b in self.ranges:
            self.before.append(total)
            total += b - a + 1
        self.count = total

    def nth(self, i: int) -> int:
        k = bisect_right(self.before, i) - 1
        return self.ranges[k][0] + i - self.before[k]

    def count_le(self, n: int) -> int:
        k = bisect_right(self.starts, n) - 1
        if k < 0:
            return 0
        a, b = self.ranges[k]
        return self.before[k] + min(n, b) - a + 1

    def __iter__(self) -> Iterator[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)


# ---------------------------------------------------------------------------------------------------
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


class EconomicEmulator:
    """The fake e-conomic agreement: a data model plus a threaded HTTP server in front of it."""

    def __init__(self, entries: int = 2000, seed: int = 1, app_secret_token: str = "emu-app-secret",
                 grant_token: str = "emu-grant", years: list[str] | None = None,
                 closed_years: list[str] = (), drafts: int = 4, port: int = 0):
        if entries < 0 or entries % 2:
            raise ValueError("entries must be a non-negative even number (vouchers have two lines)")
        self.app_secret_token, self.grant_token = app_secret_token, grant_token
        self.seed, self.port = seed, port
        self._seed_key = _mix(seed)
        self._generated = entries
        self._years = _layout_years(list(years or ["2024", "2025", "2026"]), set(closed_years),
                                    entries // 2)
        self._vstarts = [y.vstart for y in self._years]
        self._last_pair: tuple[int, dict, tuple[Line, Line] | None] = (0, {}, None)
        self.faults = Faults()
        self.url: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._log: list[RequestRecord] = []
        self._tokens, self._tokens_at = float(RATE_LIMIT), time.monotonic()
        # Everything below changes; lists and dicts are replaced, never changed in place, so a
        # request can read a consistent snapshot without holding the lock.
        self._accounts = {n: {"number": n, "type": t, "name": name, "debitCredit": dc, "vat": vat,
                              "barred": n in BARRED_ACCOUNTS} for n, t, name, dc, vat in CHART}
        self._remap: dict[int, int] = {}  # chart number of generated postings -> current number
        self._booked: tuple[Line, ...] = ()  # posted after the generated ones, in number order
        self._drafts: tuple[Line, ...] = ()
        self._next_number = entries + 1
        self._next_voucher = entries // 2 + 1
        self._version = 0
        self._generated_sums_cache: dict[tuple[int, dt.date], int] | None = None
        self._generated_sums_lock = threading.Lock()
        self._sums_cache: tuple[int, dict[tuple[int, dt.date], int]] | None = None
        if drafts:
            self.add_draft(drafts)

    # ------------------------------------------------------------------ server
    def start(self) -> str:
        self._server = _Server(("127.0.0.1", self.port), self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps stop() quick: tests start and stop many emulators.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="economic-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()  # or keep-alive clients would still be answered
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "EconomicEmulator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ generation
    def _voucher(self, voucher: int, opening: bool) -> tuple[_Kind, int, int, int, int, str, int]:
        """(kind, debit account, credit account, amount, base amount, currency, hash) of a voucher."""
        h = _mix(self._seed_key ^ voucher)
        # Bits of h: 0-15 kind, 16-23 account pair, 24-43 amount, 44-47 currency, 48-51 rate,
        # 52-53 has distribution, 54-61 which distribution, 62 vat code, 30+ party.
        kind = OPENING if opening else _KIND_SLOTS[(h & 0xFFFF) % len(_KIND_SLOTS)]
        debit, credit = kind.pairs[((h >> 16) & 0xFF) % len(kind.pairs)]
        span = kind.max_cents - kind.min_cents
        amount = kind.min_cents + (((h >> 24) & 0xFFFFF) * span >> 20)
        if kind.foreign and (h >> 44) & 0xF == 0:  # one in sixteen is in EUR
            rate = 74_550 + ((h >> 48) & 0xF) * 10  # DKK per EUR x 10,000: 7.4550 - 7.4700
            euros = amount * 10_000 // rate  # the same size of amount, invoiced in EUR
            return kind, debit, credit, euros, (euros * rate + 5_000) // 10_000, "EUR", h
        return kind, debit, credit, amount, amount, "DKK", h

    def _pair(self, numbers: tuple[int, int], voucher: int, opening: bool, date: str, year: str,
              remap: dict[int, int]) -> tuple[Line, Line]:
        """The debit and the credit line of a voucher (numbered `numbers`; 0 for drafts)."""
        kind, debit, credit, amount, base, currency, h = self._voucher(voucher, opening)
        parties = CUSTOMERS if kind.entry_type.startswith("customer") else SUPPLIERS
        named = debit if debit in _PNL or credit not in _PNL else credit
        text = kind.text(20_000 + voucher, parties[(h >> 30) % len(parties)], _CHART_NAME[named],
                         f"{MONTHS[int(date[5:7]) - 1]} {date[:4]}")
        distribution, vat = 0, None
        if (h >> 52) & 3:  # three P&L lines in four carry a departmental distribution
            distribution = _ACTIVE_DISTRIBUTIONS[((h >> 54) & 0xFF) % len(_ACTIVE_DISTRIBUTIONS)]
        if (h >> 62) & 1:
            vat = _CHART_VAT[named]
        return tuple(
            Line(number, kind.entry_type, voucher, date, remap.get(account, account), cents,
                 base_cents, currency, text, distribution if account in _PNL else 0,
                 vat if account in _PNL else None, year)
            for number, account, cents, base_cents in ((numbers[0], debit, amount, base),
                                                       (numbers[1], credit, -amount, -base)))

    def _generated_line(self, n: int, remap: dict[int, int]) -> Line:
        voucher = (n + 1) >> 1
        memo = self._last_pair  # pages ask for both lines of a voucher in a row: compute it once
        if memo[0] != voucher or memo[1] is not remap:
            year = self._years[bisect_right(self._vstarts, voucher) - 1]
            pair = self._pair((2 * voucher - 1, 2 * voucher), voucher, voucher == year.vstart,
                              year.date_of(voucher), year.key, remap)
            memo = self._last_pair = (voucher, remap, pair)
        return memo[2][0 if n & 1 else 1]

    def _year(self, key: str | None) -> _Year:
        if key is None:
            return self._years[-1]
        for year in self._years:
            if year.key == key:
                return year
        raise ValueError(f"no accounting year {key!r}")

    # ------------------------------------------------------------------ truth for tests
    def years(self) -> list[str]:
        return [y.key for y in self._years]

    def entry_count(self) -> int:
        with self._lock:
            return self._generated + len(self._booked)

    def posted_entries(self) -> Iterator[dict]:
        with self._lock:
            remap, booked = self._remap, self._booked
        base = self._base
        for n in range(1, self._generated + 1):
            yield _entry_dict(self._generated_line(n, remap), base)
        for line in booked:
            yield _entry_dict(line, base)

    def draft_entries(self) -> list[dict]:
        with self._lock:
            drafts = self._drafts
        return [_draft_dict(line, self._base) for line in drafts]

    def accounts(self) -> list[dict]:
        sums = self._sums()
        with self._lock:
            accounts, drafts = list(self._accounts.values()), self._drafts
        balance, pending = defaultdict(int), defaultdict(int)
        for (account, _), cents in sums.items():
            balance[account] += cents
        for line in drafts:
            pending[line.account] += line.base
        return [self._account_dict(a, balance[a["number"]], pending[a["number"]])
                for a in sorted(accounts, key=lambda a: a["number"])]

    def sums_by_account_month(self) -> dict[tuple[int, dt.date], Decimal]:
        return {key: _decimal(cents) for key, cents in self._sums().items()}

    def _generated_sums(self) -> dict[tuple[int, dt.date], int]:
        """Sums of the generated entries by chart account and month: one pass, cached for good
        (generated entries never change; renumbering is applied on top)."""
        with self._generated_sums_lock:
            if self._generated_sums_cache is None:
                sums: dict[tuple[int, dt.date], int] = defaultdict(int)
                for year in self._years:
                    month_of = [dt.date.fromisoformat(d).replace(day=1) for d in year.dates]
                    for voucher in range(year.vstart, year.vstart + year.vcount):
                        _, debit, credit, _, base, _, _ = self._voucher(voucher, voucher == year.vstart)
                        month = month_of[(voucher - year.vstart) * len(month_of) // year.vcount]
                        sums[(debit, month)] += base
                        sums[(credit, month)] -= base
                self._generated_sums_cache = dict(sums)
            return self._generated_sums_cache

    def _sums(self) -> dict[tuple[int, dt.date], int]:
        """All posted amounts in base currency by (current account number, first of month), øre."""
        generated = self._generated_sums()
        with self._lock:
            version, remap, booked = self._version, self._remap, self._booked
            if self._sums_cache and self._sums_cache[0] == version:
                return self._sums_cache[1]
        sums: dict[tuple[int, dt.date], int] = defaultdict(int)
        for (account, month), cents in generated.items():
            sums[(remap.get(account, account), month)] += cents
        for line in booked:
            sums[(line.account, dt.date.fromisoformat(line.date).replace(day=1))] += line.base
        with self._lock:
            self._sums_cache = (version, dict(sums))
        return self._sums_cache[1]

    # ------------------------------------------------------------------ mutations
    def book_entries(self, count: int, year: str | None = None,
                     on: dt.date | None = None) -> list[int]:
        """Books count/2 balanced vouchers into `year` (default: the latest), dated `on` or on a
        day picked from the entry number. Returns the new entry numbers."""
        if count <= 0 or count % 2:
            raise ValueError("count must be a positive even number (vouchers have two lines)")
        target = self._open_year(year)
        if on is not None and not target.first <= on <= target.last:
            raise ValueError(f"{on} is outside accounting year {target.key}")
        with self._lock:
            new = list(self._booked)
            for _ in range(count // 2):
                n, voucher = self._next_number, self._next_voucher
                date = on.isoformat() if on else self._pick_date(target, n)
                new += self._pair((n, n + 1), voucher, False, date, target.key, self._remap)
                self._next_number, self._next_voucher = n + 2, voucher + 1
            numbers = [line.number for line in new[len(self._booked):]]
            self._booked = tuple(new)
            self._version += 1
        return numbers

    def add_draft(self, count: int = 2, year: str | None = None) -> list[dict]:
        """Puts count/2 balanced vouchers in the draft journal (kassekladde); returns the lines."""
        if count <= 0 or count % 2:
            raise ValueError("count must be a positive even number (vouchers have two lines)")
        target = self._open_year(year)
        with self._lock:
            lines = []
            for _ in range(count // 2):
                voucher = self._next_voucher
                self._next_voucher += 1
                date = self._pick_date(target, voucher)
                lines += self._pair((0, 0), voucher, False, date, target.key, self._remap)
            self._drafts += tuple(lines)
            self._version += 1
        return [_draft_dict(line, self._base) for line in lines]

    def book_drafts(self) -> list[int]:
        """Books every draft line as a posted entry (keeping its voucher) and empties the journal."""
        with self._lock:
            booked = tuple(line._replace(number=self._next_number + i)
                           for i, line in enumerate(self._drafts))
            self._next_number += len(booked)
            self._booked += booked
            self._drafts = ()
            self._version += 1
        return [line.number for line in booked]

    def add_account(self, number: int, name: str, account_type: str = "profitAndLoss") -> None:
        with self._lock:
            if number in self._accounts:
                raise ValueError(f"account {number} exists")
            self._accounts = {**self._accounts, number: {
                "number": number, "type": account_type, "name": name, "barred": False,
                "debitCredit": "debit", "vat": None}}
            self._version += 1

    def rename_account(self, number: int, new_name: str) -> None:
        with self._lock:
            account = self._account(number)
            self._accounts = {**self._accounts, number: {**account, "name": new_name}}
            self._version += 1

    def renumber_account(self, old: int, new: int) -> None:
        """Moves an account to a new number; its entries (posted and draft) move with it."""
        with self._lock:
            account = self._account(old)
            if new in self._accounts:
                raise ValueError(f"account {new} exists")
            accounts = {n: a for n, a in self._accounts.items() if n != old}
            accounts[new] = {**account, "number": new}
            remap = {chart: (new if now == old else now) for chart, now in self._remap.items()}
            if old not in self._remap:  # the chart account `old` still held its own number
                remap[old] = new
            move = lambda line: line._replace(account=new) if line.account == old else line
            self._accounts, self._remap = accounts, remap
            self._booked = tuple(map(move, self._booked))
            self._drafts = tuple(map(move, self._drafts))
            self._version += 1

    def delete_account(self, number: int) -> None:
        used = {account for account, _ in self._sums()}
        with self._lock:
            self._account(number)
            if number in used or any(line.account == number for line in self._drafts):
                raise ValueError(f"account {number} has entries and cannot be deleted")
            self._accounts = {n: a for n, a in self._accounts.items() if n != number}
            self._version += 1

    def _account(self, number: int) -> dict:
        if number not in self._accounts:
            raise ValueError(f"no account {number}")
        return self._accounts[number]

    def _open_year(self, key: str | None) -> _Year:
        year = self._year(key)
        if year.closed:
            raise ValueError(f"accounting year {year.key} is closed")
        return year

    def _pick_date(self, year: _Year, salt: int) -> str:
        return year.dates[_mix(self._seed_key ^ (salt << 1) ^ 0x5A5A) % len(year.dates)]

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

    def _year_dict(self, y: _Year) -> dict:
        me = f"{self._base}/accounting-years/{y.url_key}"
        out: dict[str, Any] = {"year": y.key, "fromDate": y.first.isoformat(),
                               "toDate": y.last.isoformat()}
        if y.closed:
            out["closed"] = True
        out.update(entries=f"{me}/entries", totals=f"{me}/totals", periods=f"{me}/periods", self=me)
        return out

    def _periods(self, y: _Year) -> list[dict]:
        me = f"{self._base}/accounting-years/{y.url_key}"
        return [{"periodNumber": i, "fromDate": first.isoformat(), "toDate": last.isoformat(),
                 "accountingYear": {"year": y.key, "self": me},
                 "entries": f"{me}/periods/{i}/entries", "self": f"{me}/periods/{i}"}
                for i, (first, last) in enumerate(y.months(), 1)]

    def _totals(self, y: _Year) -> list[dict]:
        per_account: dict[int, int] = defaultdict(int)
        for (account, month), cents in self._sums().items():
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
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        try:
            if handler.command != "GET":
                raise _HttpError(405, "Only reading is emulated.", "Use GET.")
            self._check_tokens(handler.headers)
            self.faults._gate()
            body = self._route(split.path, params, handler.path)
            status = 200
        except Exception as exc:  # an emulator bug answers 500 instead of dropping the connection
            error = exc if isinstance(exc, _HttpError) else _HttpError(
                500, "An internal error occurred.", f"{type(exc).__name__}: {exc}")
            status, headers = error.status, error.headers
            body = dumps({"message": error.message, "developerHint": error.hint,
                          "logId": uuid.uuid4().hex, "httpStatusCode": error.status,
                          "logTime": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                          "errors": {}, **error.extra})
        with self._lock:
            self._log.append(RequestRecord(handler.command, split.path, dict(params), status))
        self._send(handler, status, body.encode("utf-8"), headers)

    def _check_tokens(self, headers: Any) -> None:
        given = (headers.get("X-AppSecretToken"), headers.get("X-AgreementGrantToken"))
        if given not in ((self.app_secret_token, self.grant_token), (DEMO_TOKEN, DEMO_TOKEN)):
            raise _unauthorized()

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str]) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-CallCost", "1")
        handler.send_header("X-RateLimiting",
                            f"token-limit-{RATE_LIMIT}-per-60-seconds: {self._take_token()}/{RATE_LIMIT}")
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _take_token(self) -> int:
        """[?] The bucket is reported, not enforced: 429s come only from faults.rate_limit."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(RATE_LIMIT, self._tokens + (now - self._tokens_at) * RATE_LIMIT / 60)
            self._tokens, self._tokens_at = max(0.0, self._tokens - 1), now
            return int(self._tokens)

    def _route(self, path: str, params: list[tuple[str, str]], raw: str) -> str:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        query = dict(params)
        collection = lambda items, fields, sortable=True: self._collection(
            items, fields, path, params, raw, sortable)
        match parts:
            case [] | ["self"]:
                return dumps(self._self_dict())
            case ["accounts"]:
                return collection(self.accounts(), ACCOUNT_FIELDS)
            case ["accounts", number]:
                return dumps(self._one(self.accounts(), "accountNumber", number))
            case ["accounting-years"]:
                return collection([self._year_dict(y) for y in self._years], YEAR_FIELDS)
            case ["accounting-years", key]:
                return dumps(self._year_dict(self._url_year(key)))
            case ["accounting-years", key, "periods"]:
                return collection(self._periods(self._url_year(key)), PERIOD_FIELDS)
            case ["accounting-years", key, "periods", number]:
                return dumps(self._one(self._periods(self._url_year(key)), "periodNumber", number))
            case ["accounting-years", key, "periods", number, "entries"]:
                period = self._one(self._periods(self._url_year(key)), "periodNumber", number)
                return self._entries_page(self._url_year(key), params, query, path, raw,
                                          (period["fromDate"], period["toDate"]))
            case ["accounting-years", key, "entries"]:
                return self._entries_page(self._url_year(key), params, query, path, raw)
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
        raise _HttpError(404, _NOT_FOUND, f"No resource at {path}.")

    def _self_dict(self) -> dict:
        base = self._base
        return {"agreementNumber": 100000 + self.seed,
                "company": {"name": "Emulator Handel ApS", "vatNumber": "DK12345678"},
                "userName": "emulator", "application": {"name": "budget123"},
                "accounts": f"{base}/accounts", "accountingYears": f"{base}/accounting-years",
                "self": f"{base}/self"}

    def _url_year(self, url_key: str) -> _Year:
        key = url_key.replace("_6_", "/")
        for year in self._years:
            if year.key == key:
                return year
        raise _HttpError(404, _NOT_FOUND, f"There is no accounting year '{key}'.")

    @staticmethod
    def _one(items: list[dict], field: str, number: str) -> dict:
        for item in items:
            if str(item[field]) == number:
                return item
        raise _HttpError(404, _NOT_FOUND, f"No item with {field} {number}.")

    # ------------------------------------------------------------------ paging
    def _paging(self, params: list[tuple[str, str]]) -> tuple[int, int]:
        query = dict(params)
        try:
            skip, size = int(query.get("skippages", 0)), int(query.get("pagesize", DEFAULT_PAGE_SIZE))
        except ValueError:
            raise _HttpError(400, "skippages and pagesize must be whole numbers.") from None
        if size > MAX_PAGE_SIZE or size < 1 or skip < 0:
            raise _HttpError(400, f"pagesize must be 1 to {MAX_PAGE_SIZE} and skippages at least 0.",
                             f"maxPageSizeAllowed is {MAX_PAGE_SIZE}.")
        return skip, size

    def _envelope(self, items_json: str, params: list[tuple[str, str]], path: str, raw: str,
                  results: int, without_filter: int) -> str:
        skip, size = self._paging(params)
        kept = [(k, v) for k, v in params if k not in ("skippages", "pagesize")]
        link = lambda page: (f"{self._base}{path}?"
                             + urlencode([("skippages", page), ("pagesize", size), *kept],
                                         safe="$:*[],", quote_via=quote))
        last = max(0, (results - 1) // size)
        pagination: dict[str, Any] = {"maxPageSizeAllowed": MAX_PAGE_SIZE, "skipPages": skip,
                                      "pageSize": size, "results": results,
                                      "resultsWithoutFilter": without_filter, "firstPage": link(0)}
        if (skip + 1) * size < results:
            pagination["nextPage"] = link(skip + 1)
        pagination["lastPage"] = link(last)
        return (f'{{"collection":[{items_json}],"pagination":{dumps(pagination)},'
                f'"self":{encode_basestring(self._base + raw)}}}')

    def _collection(self, items: list[dict], fields: dict[str, type], path: str,
                    params: list[tuple[str, str]], raw: str, sortable: bool) -> str:
        """Filter, sort and page a small collection held as public dicts."""
        query = dict(params)
        skip, size = self._paging(params)
        dnf = _parse_filter(query.get("filter"), fields)
        # Booleans appear only when true, so a missing one is false.
        value = lambda item, f: item.get(f, False if fields[f] is bool else None)
        chosen = [i for i in items if dnf is None or _matches(dnf, lambda f: value(i, f))]
        if query.get("sort") and sortable:
            field = query["sort"].lstrip("-")
            if field not in fields:
                raise _HttpError(400, f"The property '{field}' cannot be used for sorting.",
                                 allowedSortingFields=sorted(fields))
            chosen.sort(key=lambda i: (i.get(field) is None, i.get(field)),
                        reverse=query["sort"].startswith("-"))
        page = chosen[skip * size:(skip + 1) * size]
        return self._envelope(",".join(dumps(i) for i in page), params, path, raw, len(chosen),
                              len(items))

    # ------------------------------------------------------------------ entries
    def _entries_page(self, year: _Year, params: list[tuple[str, str]], query: dict[str, str],
                      path: str, raw: str, dates: tuple[str, str] | None = None) -> str:
        skip, size = self._paging(params)
        dnf = _parse_filter(query.get("filter"), ENTRY_FIELDS)
        order = query.get("sort", "")
        if order not in ("", "date", "-date", "entryNumber", "-entryNumber"):
            raise _HttpError(400, f"Entries cannot be sorted by '{order}'.",
                             allowedSortingFields=["date", "entryNumber"])
        with self._lock:
            remap, booked, drafts, next_number = (self._remap, self._booked, self._drafts,
                                                  self._next_number)
        extras = [line for line in booked if line.year == year.key]
        if self.faults.leak_drafts:  # a broken source serving its draft journal as if posted
            extras += [line._replace(number=next_number + i) for i, line in enumerate(drafts)
                       if line.year == year.key]
        selection, extras, without_filter = self._select(year, dnf, extras, remap, dates)
        total = selection.count + len(extras)
        indexes = list(range(skip * size, min(total, (skip + 1) * size)))
        if self.faults.repeat_boundary_entry and skip > 0 and indexes and skip * size - 1 < total:
            indexes.insert(0, skip * size - 1)  # the last entry of the page before, again
        lines = self._arrange(selection, extras, order, total, indexes, remap)
        items = self._corrupt([_entry_json(line, self._base) for line in lines])
        body = self._envelope(",".join(items), params, path, raw, total, without_filter)
        if self.faults.page_delay:
            time.sleep(self.faults.page_delay)
        to_book = self.faults._page_served()
        if to_book:
            # Dated on the year's first day: it lands before everything already paged, so the
            # client's next page starts earlier than it should (the page-boundary duplicates).
            self.book_entries(to_book, year.key, on=year.first)
        if self.faults.corrupt == "malformed_json":
            body = body[: len(body) // 2]
        return body

    def _select(self, year: _Year, dnf: list[list[_Term]] | None, extras: list[Line],
                remap: dict[int, int], dates: tuple[str, str] | None
                ) -> tuple[_Selection, list[Line], int]:
        """The year's generated entries passing the filter, as ranges computed from the filter
        where it speaks of entryNumber, voucherNumber or date (all rise with n), and by testing
        each candidate otherwise; plus the extra lines that pass. Also the count before filtering."""
        lo, hi = year.n_range
        base: Ranges = [(lo, hi)] if lo <= hi else []
        if dates:
            base = _intersect(base, self._term_ranges(year, _Term("date", "gte", dates[0]), lo, hi))
            base = _intersect(base, self._term_ranges(year, _Term("date", "lte", dates[1]), lo, hi))
            extras = [e for e in extras if dates[0] <= e.date <= dates[1]]
        without_filter = sum(b - a + 1 for a, b in base) + len(extras)
        if dnf is None:
            return _Selection(base), extras, without_filter
        candidates, needs_test = [], False
        for conj in dnf:
            ranges = base
            for term in conj:
                if term.field in ("entryNumber", "voucherNumber", "date"):
                    ranges = _intersect(ranges, self._term_ranges(year, term, lo, hi))
                else:
                    needs_test = True
            candidates.append(ranges)
        ranges = _union(*candidates)
        passes = lambda line: _matches(dnf, lambda f: _ENTRY_GETTERS[f](line))
        if needs_test:  # O(candidates): only filters on amount, text, ... get here
            ranges = _runs(n for n in _Selection(ranges) if passes(self._generated_line(n, remap)))
        return _Selection(ranges), [e for e in extras if passes(e)], without_filter

    def _term_ranges(self, year: _Year, term: _Term, lo: int, hi: int) -> Ranges:
        """Entry numbers in lo..hi whose field satisfies the term, by binary search (the field
        never decreases with n)."""
        key: Callable[[int], Any] = {
            "entryNumber": lambda n: n,
            "voucherNumber": lambda n: (n + 1) >> 1,
            "date": lambda n: year.date_of((n + 1) >> 1),
        }[term.field]
        numbers = range(lo, hi + 1)

        def equal(value: Any) -> Ranges:
            first = lo + bisect_left(numbers, value, key=key)
            last = lo + bisect_right(numbers, value, key=key) - 1
            return [(first, last)] if first <= last else []

        op, value = term.op, term.value
        if op == "like":  # a pattern on a number or date: rare, so test every candidate
            return _runs(n for n in numbers if value.fullmatch(str(key(n))))
        if op in ("eq", "in"):
            return _union(*(equal(v) for v in (value if op == "in" else [value])))
        if op in ("ne", "nin"):
            return _complement(_union(*(equal(v) for v in (value if op == "nin" else [value]))), lo, hi)
        if op in ("gt", "gte"):
            cut = (bisect_right if op == "gt" else bisect_left)(numbers, value, key=key)
            return [(lo + cut, hi)]
        cut = (bisect_left if op == "lt" else bisect_right)(numbers, value, key=key)
        return [(lo, lo + cut - 1)]

    def _arrange(self, selection: _Selection, extras: list[Line], order: str, total: int,
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
        out = []
        for index in indexes:
            at = total - 1 - index if order.startswith("-") else index
            j = bisect_left(slots, at)
            if j < len(slots) and slots[j] == at:
                out.append(extras[j])
            else:
                out.append(self._generated_line(selection.nth(at - j), remap))
        return out

    def _generated_up_to(self, selection: _Selection, date: str) -> int:
        """How many selected generated entries are dated on or before `date`."""
        numbers = range(1, self._generated + 1)
        last = bisect_right(numbers, date, key=lambda n: self._generated_date(n))
        return selection.count_le(last)

    def _generated_date(self, n: int) -> str:
        voucher = (n + 1) >> 1
        return self._years[bisect_right(self._vstarts, voucher) - 1].date_of(voucher)

    def _corrupt(self, items: list[str]) -> list[str]:
        mode = self.faults.corrupt
        if not items or mode not in ("non_numeric_amount", "unknown_account", "missing_field"):
            return items
        entry = json.loads(items[0], parse_float=Decimal)
        if mode == "non_numeric_amount":
            entry["amount"] = entry["amountInBaseCurrency"] = "abc"
        elif mode == "missing_field":
            del entry["account"]
        else:
            with self._lock:
                unknown = max(self._accounts) + 10_000
            entry["account"] = {"accountNumber": unknown, "self": f"{self._base}/accounts/{unknown}"}
        return [dumps(entry)] + items[1:]

    def _one_entry(self, year: _Year, number: str) -> str:
        if not number.isdigit():
            raise _HttpError(404, _NOT_FOUND, f"No entry {number}.")
        n = int(number)
        lo, hi = year.n_range
        with self._lock:
            remap, booked = self._remap, self._booked
        if lo <= n <= hi:
            return _entry_json(self._generated_line(n, remap), self._base)
        for line in booked:
            if line.number == n and line.year == year.key:
                return _entry_json(line, self._base)
        raise _HttpError(404, _NOT_FOUND, f"No entry {n} in accounting year {year.key}.")


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
    year = e.year.replace("/", "_6_")
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
    year = e.year.replace("/", "_6_")
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a requests.Session reuses the connection
    server_version = "EconomicEmulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't let them wait
    timeout = 60  # an idle keep-alive connection is dropped after this

    def do_GET(self) -> None:
        self.server.emulator._handle(self)

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)  # drain the body so the connection stays usable
        self.server.emulator._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the per-request stderr line


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EconomicEmulator):
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the client


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated e-conomic agreement on loopback.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--app-secret-token", default="emu-app-secret")
    parser.add_argument("--grant-token", default="emu-grant")
    args = parser.parse_args(argv)
    emulator = EconomicEmulator(entries=args.entries, seed=args.seed, port=args.port,
                                app_secret_token=args.app_secret_token, grant_token=args.grant_token)
    url = emulator.start()
    print(f"e-conomic emulator at {url}  ({emulator.entry_count()} posted entries)")
    print(f"  X-AppSecretToken: {args.app_secret_token}")
    print(f"  X-AgreementGrantToken: {args.grant_token}   (or both headers 'demo')")
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
