"""An emulator of Uniconta's OData API (https://odata.uniconta.com), over HTTPS.

It serves one deterministic company (company.py) the way Uniconta's OData ("REST-like") API shows a
company: `GET /odata/<CompanyId>/<Entity>` with `$filter` (OData terms `eq ne gt ge lt le` joined by
`and`/`or`, dates as `Date ge datetime'2024-01-01T00:00:00'`), `$orderby`, `$top`, `$skip`, answers
in `{"value": [...]}` envelopes, HTTP Basic with the user name written `00<CompanyId>/<UserName>`.
Shapes follow /work/shared/reference/accounting-apis.md section 4; what the vendor does not document
is marked [?].

    with UnicontaEmulator(entries=2400) as emu:                  # HTTPS: trust emu.ca_file
        requests.get(emu.url + f"/odata/{emu.company_id}/GLTransClient",
                     params={"$filter": "RowId gt 0", "$orderby": "RowId", "$top": "1000"},
                     auth=(f"00{emu.company_id}/{emu.username}", emu.password), verify=emu.ca_file)

Entities: `CompanyClient` (its `_Dim1`..`_Dim5` label the dimensions, null = unused),
`GLAccountClient`, `GLDimType1Client`..`GLDimType5Client` (`KeyStr, Name, Blocked`; empty for an
unused dimension [?]), `GLTransClient` (posted lines) and `GLDailyJournalLineClient` (the draft
journal: one line per voucher, its account and offset account). Every record has a `RowId` [?]:
a posted line's is unique in the company and rises as lines are posted, with gaps (other rows
share the counter), and each posted line carries the `JournalPostedId` of the posting that made it.

Behaviour the vendor leaves open, chosen here [?]:
- A page holds at most `page_size` records (default 1000); a `$top` above it, or none, gets that
  many and an `@odata.nextLink` with `$skip` (and the rest of `$top`) for the remainder.
- Refusals, in this order: 401 for a login not written `00<CompanyId>/<user>` or a wrong password;
  404 for a company that does not exist (or an entity that does not); 403 for a user without rights
  in the company; then the faults' refusals; then 429 once the user's calls today reach
  `daily_quota` (5,000 in the standard package [doc]). Calls refused are not counted. The 429 says
  in `Retry-After` (seconds, rounded up) and in its message when the count resets: at midnight
  Danish time, or at `quota_reset_at` when a test sets it. `new_day()` is that midnight.
- Error bodies are OData's `{"error": {"code", "message"}}`.

Truth for tests: `sums_by_account_month()`, `sums_by_dimension()`, `row_ids()`, `posted_entries()`,
`journal_lines()`, `calls_today()`. What happens later: `post(n, date=None)` (a posting of n lines,
back-dated when `date` is earlier than lines already posted), `add_journal_lines(n)`,
`post_journal()`.

Faults (`emu.faults`, faults.py): revoked (401), forbidden (403), rate_limit(), retry_after_seconds,
server_errors() through gate(); drip_bytes_per_second and truncate_body from the server base; on
GLTransClient pages: page_delay, book_while_paging (a posting of that many lines), leak_drafts (the
journal's lines served as posted ones, without a JournalPostedId).

Run it by hand: python -m b123_emulators.uniconta --port 8767 --entries 5000
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import math
import re
import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import quote, unquote, urlencode
from zoneinfo import ZoneInfo

from b123_emulators.company import BARRED_DEPARTMENTS, DEPARTMENTS, DISTRIBUTIONS, Company, Line, mix
from b123_emulators.company import to_decimal as _decimal
from b123_emulators.query import (
    Dnf,
    QueryError,
    Selection,
    intersect,
    matches,
    monotone_ranges,
    parse_odata_filter,
    runs,
    union,
)
from b123_emulators.server import EmulatorServer, HttpError, Request, Response, json_response

COMPANY_ID = 40117
USERNAME = "budget123"
PASSWORD = "Uniconta-emulator-pw"
MAX_PAGE_SIZE = 1000  # [?]
DAILY_CALLS = 5000  # server calls per user per day in the standard package [doc]
QUOTA_ZONE = ZoneInfo("Europe/Copenhagen")  # [?] the day's count resets at midnight Danish time
BASE_CURRENCY = "DKK"
ROW_ID_BASE, ROW_ID_STEP = 70_000, 3  # posted line n has RowId 70,000 + 3n: rising, with gaps [?]
JOURNAL_ROW_ID_BASE = 5_000_000
VOUCHERS_PER_POSTING = 40  # the generated books were posted 40 vouchers at a time [?]
JOURNAL = "KASSE"

# The labels `_Dim1`..`_Dim5` the company gives its dimensions; None: the dimension is unused.
DIMENSIONS = ("Afdeling", "Projekt", "Formål", None, None)
# Values of each dimension (KeyStr, Name, Blocked); a dimension's label is the company's to choose.
_DEPARTMENT_KEYS = {n: str(100 * n) for n, _ in DEPARTMENTS}
VALUES: dict[int, tuple[tuple[str, str, bool], ...]] = {
    1: tuple((_DEPARTMENT_KEYS[n], name, n in BARRED_DEPARTMENTS) for n, name in DEPARTMENTS),
    2: (("P1001", "Webshop", False), ("P1002", "Nyt lager", False), ("P1003", "ERP-skifte", False),
        ("P0990", "Afsluttet projekt", True)),
    3: (("DRIFT", "Drift", False), ("UDV", "Udvikling", False), ("MARK", "Markedsføring", False)),
    4: (("NORD", "Nordjylland", False), ("SYD", "Syddanmark", False), ("HOVED", "Hovedstaden", False)),
    5: (("JH", "Jens Hansen", False), ("ML", "Mette Larsen", False), ("SK", "Sofie Kjær", False)),
}
# Dimension 1 (the department) comes from the line's departmental distribution; a split
# distribution posts to its first department (Uniconta has no split distributions).
_DEPARTMENT_OF = {number: _DEPARTMENT_KEYS[parts[0][0]] for number, _, parts in DISTRIBUTIONS}

# The company's account types (e-conomic's names) as Uniconta's AccountType [?].
ACCOUNT_TYPES = {"headingStart": "Header", "heading": "Header", "sumInterval": "Sum", "totalFrom": "Sum",
                 "sumAlpha": "Sum"}

# Fields each entity can be filtered and ordered on, with their types.
TRANS_FIELDS: dict[str, type] = {"RowId": int, "Date": dt.date, "Account": str, "Voucher": int,
                                 "JournalPostedId": int}
FIELDS: dict[str, dict[str, type]] = {
    "CompanyClient": {"RowId": int, "CompanyId": int, "Name": str},
    "GLAccountClient": {"RowId": int, "Account": str, "Name": str, "AccountType": str, "Blocked": bool},
    **{f"GLDimType{n}Client": {"RowId": int, "KeyStr": str, "Name": str, "Blocked": bool} for n in range(1, 6)},
    "GLDailyJournalLineClient": {"RowId": int, "Journal": str, "Date": dt.date, "Voucher": int, "Account": str},
    "GLTransClient": TRANS_FIELDS,
}
OPTIONS = {"$filter", "$orderby", "$top", "$skip"}
_LOGIN = re.compile(r"00(\d+)/(.+)", re.S)
_PATH = re.compile(r"/odata/([^/]+)/([^/]+)/?")


def _amount(cents: int) -> Decimal:
    return _decimal(cents)


def _passes(dnf: Dnf | None, record: dict) -> bool:
    """Whether a record passes the filter; a date is compared without its time of day."""
    def field(name: str) -> Any:
        value = record[name]
        return value[:10] if name == "Date" and isinstance(value, str) else value
    return dnf is None or matches(dnf, field)


class UnicontaEmulator(EmulatorServer):
    """Uniconta's OData API for one company and the users with rights in it."""

    server_version = "Microsoft-IIS/10.0"
    thread_name = "uniconta-emulator"
    refusals = {
        "revoked": ("The user name or password is incorrect.", ""),
        "forbidden": ("The user has no rights in this company.", ""),
        "rate_limited": ("Too many requests. Slow down.", ""),
        "server_error": ("An internal server error occurred.", ""),
    }
    codes = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
             405: "MethodNotAllowed", 429: "TooManyRequests"}

    def __init__(self, entries: int = 2400, seed: int = 1, page_size: int = MAX_PAGE_SIZE,
                 company_id: int = COMPANY_ID, username: str = USERNAME, password: str = PASSWORD,
                 dimensions: tuple[str | None, ...] = DIMENSIONS, journal_lines: int = 2,
                 daily_quota: int = DAILY_CALLS, port: int = 0, tls: bool = True):
        if len(dimensions) != 5:
            raise ValueError("a Uniconta company has five dimension labels (None: unused)")
        self.company = Company(entries, seed, drafts=2 * journal_lines)
        super().__init__(port=port, tls=tls)
        self.company_id, self.username, self.password = company_id, username, password
        self.page_size, self.dimensions = page_size, tuple(dimensions)
        self.users = {username.casefold(): password}  # user name -> password
        self.without_rights: set[str] = set()  # users that exist but have no rights in the company
        self.daily_quota = daily_quota
        self.quota_reset_at: dt.datetime | None = None  # None: the next midnight, Danish time
        self._calls: dict[str, int] = defaultdict(int)
        self._calls_lock = threading.Lock()
        self._dimension_key = mix(seed ^ 0xD1D1)
        self._posting_of: dict[int, int] = {}  # number of a line posted later -> its JournalPostedId
        self._next_posting = self._generated_posting((entries + 1) // 2) + 1

    # ------------------------------------------------------------------ budget123's side
    def connection(self, **changes: Any) -> dict:
        """budget123's connection JSON for this server."""
        return {"base_url": self.url, "company_id": self.company_id, "username": self.username,
                "password": self.password, **changes}

    @property
    def login(self) -> str:
        return f"00{self.company_id}/{self.username}"

    # ------------------------------------------------------------------ what happens later
    def post(self, n: int = 2, date: dt.date | None = None) -> list[int]:
        """Posts n lines (n/2 balanced vouchers) in one posting, dated `date` (any day of an open
        year: back-dated when earlier than what is posted already) or a day the company picks;
        returns their RowIds."""
        year = None if date is None else next(
            (y.key for y in self.company.years if y.first <= date <= y.last), None)
        if date is not None and year is None:
            raise ValueError(f"{date} is in no accounting year of the company")
        return self._posted(lambda: self.company.book_entries(n, year=year, on=date))

    def add_journal_lines(self, n: int = 1) -> list[dict]:
        """Puts n lines (n vouchers) in the draft journal, unposted; returns them as served."""
        vouchers = {line.voucher for line in self.company.add_draft(2 * n)}
        return [line for line in self.journal_lines() if line["Voucher"] in vouchers]

    def post_journal(self) -> list[int]:
        """Posts the whole draft journal (two posted lines a journal line, vouchers kept) in one
        posting and empties it; returns the new lines' RowIds."""
        return self._posted(self.company.book_drafts)

    def _posted(self, book: Callable[[], list[int]]) -> list[int]:
        # Under the company's lock, so no reader's snapshot has the lines without their posting.
        with self.company.lock:
            numbers = book()
            posting, self._next_posting = self._next_posting, self._next_posting + 1
            self._posting_of = {**self._posting_of, **{n: posting for n in numbers}}
        return [self.row_id(n) for n in numbers]

    def new_day(self) -> None:
        """Midnight: every user's count of calls starts again."""
        with self._calls_lock:
            self._calls.clear()

    def calls_today(self, user: str | None = None) -> int:
        with self._calls_lock:
            return self._calls[(user or self.username).casefold()]

    def quota_resets(self) -> dt.datetime:
        if self.quota_reset_at is not None:
            return self.quota_reset_at
        now = dt.datetime.now(QUOTA_ZONE)
        return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), QUOTA_ZONE)

    # ------------------------------------------------------------------ truth for tests
    def entry_count(self) -> int:
        return self.company.entry_count()

    def row_ids(self) -> list[int]:
        return [self.row_id(line.number) for line in self.company.posted_lines()]

    def posted_entries(self) -> list[dict]:
        return [self._trans(line) for line in self.company.posted_lines()]

    def sums_by_account_month(self) -> dict[tuple[int, dt.date], Decimal]:
        return {key: _amount(cents) for key, cents in self.company.sums().items()}

    def sums_by_dimension(self) -> dict[tuple[str, str], Decimal]:
        """Posted amounts per (dimension label, KeyStr) for the dimensions transactions carry
        (1..3, those in use)."""
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for line in self.company.posted_lines():
            for label, code in list(zip(self.dimensions, self._dimensions(line)))[:3]:
                if label and code:
                    sums[(label, code)] += line.base
        return {key: _amount(cents) for key, cents in sums.items()}

    def journal_lines(self) -> list[dict]:
        drafts = self.company.snapshot().drafts
        return [self._journal_line(drafts[i], drafts[i + 1]) for i in range(0, len(drafts) - 1, 2)]

    # ------------------------------------------------------------------ the records
    @staticmethod
    def row_id(number: int) -> int:
        return ROW_ID_BASE + ROW_ID_STEP * number

    @staticmethod
    def _generated_posting(voucher: int) -> int:
        return 1000 + (voucher - 1) // VOUCHERS_PER_POSTING

    def _posting(self, line: Line) -> int | None:
        if line.number <= self.company.generated:
            return self._generated_posting(line.voucher)
        return self._posting_of.get(line.number)  # None: not posted (a leaked draft line)

    def _dimensions(self, line: Line) -> tuple[str | None, ...]:
        """The line's value of each of the five dimensions (None: none); P&L lines only."""
        if not line.distribution:
            return (None,) * 5
        h = mix(self._dimension_key ^ line.voucher)
        codes: list[str | None] = [_DEPARTMENT_OF[line.distribution]]
        for n in range(2, 6):
            pick = (h >> (8 * n)) & 0xFF
            codes.append(VALUES[n][pick % 3][0] if pick & 1 else None)  # half the lines; never a blocked value
        return tuple(code if label else None for code, label in zip(codes, self.dimensions))

    def _money_fields(self, line: Line) -> dict[str, Any]:
        base = _amount(line.base)
        foreign = line.currency != BASE_CURRENCY
        return {"Amount": base, "Debit": max(base, Decimal("0.00")), "Credit": max(-base, Decimal("0.00")),
                "Currency": line.currency if foreign else None,
                "AmountCur": _amount(line.amount) if foreign else Decimal("0.00")}

    def _trans(self, line: Line) -> dict:
        record = {"RowId": self.row_id(line.number), "Account": str(line.account), "Date": f"{line.date}T00:00:00",
                  "Voucher": line.voucher, "VoucherLine": 2 - (line.number & 1),
                  "JournalPostedId": self._posting(line), "Text": line.text, **self._money_fields(line)}
        record.update((f"Dimension{n}", code) for n, code in enumerate(self._dimensions(line), 1))
        return record

    def _journal_line(self, debit: Line, credit: Line) -> dict:
        record = {"RowId": JOURNAL_ROW_ID_BASE + debit.voucher, "Journal": JOURNAL, "Date": f"{debit.date}T00:00:00",
                  "Voucher": debit.voucher, "Text": debit.text, "AccountType": "Finance",
                  "Account": str(debit.account), "OffsetAccountType": "Finance",
                  "OffsetAccount": str(credit.account), **self._money_fields(debit)}
        record.update((f"Dimension{n}", code) for n, code in enumerate(self._dimensions(debit), 1))
        return record

    def _company_record(self) -> dict:
        return {"RowId": 1, "CompanyId": self.company_id, "Name": "Emulator Danmark ApS",
                "CurrencyId": BASE_CURRENCY,
                **{f"_Dim{n}": label for n, label in enumerate(self.dimensions, 1)}}

    def _accounts(self) -> list[dict]:
        with self.company.lock:
            accounts = sorted(self.company.accounts.values(), key=lambda a: a["number"])
        return [{"RowId": 20_000 + a["number"], "Account": str(a["number"]), "Name": a["name"],
                 "AccountType": ACCOUNT_TYPES.get(a["type"]) or _posting_type(a), "Blocked": a["barred"]}
                for a in accounts]

    def _dimension_values(self, n: int) -> list[dict]:
        if not self.dimensions[n - 1]:
            return []
        return [{"RowId": 30_000 + 100 * n + i, "KeyStr": key, "Name": name, "Blocked": blocked}
                for i, (key, name, blocked) in enumerate(VALUES[n])]

    # ------------------------------------------------------------------ HTTP
    def route(self, request: Request) -> Response:
        if request.method != "GET":
            raise HttpError(405, "Only reading is emulated.")
        user, login_company = self._authenticate(request)
        entity = self._entity(request.path)
        if user in self.without_rights or login_company != str(self.company_id):
            raise HttpError(403, f"The user '{user}' has no rights in company {self.company_id}.")
        self.gate()
        self._count_call(user)
        try:
            if entity == "GLTransClient":
                return self._transactions(request)
            records = {"CompanyClient": lambda: [self._company_record()], "GLAccountClient": self._accounts,
                       "GLDailyJournalLineClient": self.journal_lines,
                       **{f"GLDimType{n}Client": (lambda n=n: self._dimension_values(n)) for n in range(1, 6)}}
            return self._collection(request, entity, records[entity]())
        except QueryError as exc:
            raise HttpError(400, exc.message) from None

    def error_response(self, error: HttpError) -> Response:
        code = error.extra.get("code") or self.codes.get(error.status, "InternalServerError")
        headers = {"WWW-Authenticate": 'Basic realm="Uniconta"'} if error.status == 401 else None
        return json_response({"error": {"code": code, "message": error.message}}, error.status, headers)

    def _authenticate(self, request: Request) -> tuple[str, str]:
        """The user the request logs in as and the company its login names; 401 unless written
        00<CompanyId>/<user> with the user's password. (A login naming another company than the
        path's gets 403 [?].)"""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            login = password = ""
        written = _LOGIN.fullmatch(login)
        if scheme != "Basic" or written is None:
            raise HttpError(401, "Log in as 00<CompanyId>/<UserName> with the user's password.")
        user = written[2].casefold()  # [?] user names compare without case, passwords exactly
        if self.users.get(user) != password:
            raise HttpError(401, self.refusals["revoked"][0])
        return user, written[1]

    def _entity(self, path: str) -> str:
        match = _PATH.fullmatch(path)
        if match is None:
            raise HttpError(404, "The requested resource was not found.")
        company, entity = unquote(match[1]), unquote(match[2])
        if company != str(self.company_id):
            raise HttpError(404, f"Company {company} does not exist or is not available.", code="CompanyNotFound")
        if entity not in FIELDS:
            raise HttpError(404, f"The entity '{entity}' does not exist.")
        return entity

    def _count_call(self, user: str) -> None:
        with self._calls_lock:
            if self._calls[user] >= self.daily_quota:
                resets = self.quota_resets()
                wait = max(1, math.ceil((resets - dt.datetime.now(dt.timezone.utc)).total_seconds()))
                raise HttpError(429, f"The daily limit of {self.daily_quota:,} server calls for the user has been "
                                     f"reached. It resets at {resets.isoformat(timespec='seconds')}.",
                                headers={"Retry-After": str(wait)}, code="DailyCallLimitReached")
            self._calls[user] += 1

    # ------------------------------------------------------------------ collections and pages
    def _options(self, request: Request, entity: str) -> tuple[Dnf | None, tuple[str, bool] | None, int, int | None]:
        params = dict(request.params)
        unknown = sorted(set(params) - OPTIONS)
        if unknown:
            raise QueryError(f"The query option '{unknown[0]}' is not supported.")
        fields = FIELDS[entity]
        order = None
        if params.get("$orderby"):
            words = params["$orderby"].split()
            if words[0] not in fields or words[1:] not in ([], ["asc"], ["desc"]):
                raise QueryError(f"Cannot order {entity} by '{params['$orderby']}'.")
            order = (words[0], words[1:] == ["desc"])
        whole = {}
        for option in ("$skip", "$top"):
            value = params.get(option)
            if value is not None and not value.isdigit():
                raise QueryError(f"The value '{value}' of {option} is not a non-negative integer.")
            whole[option] = None if value is None else int(value)
        return parse_odata_filter(params.get("$filter"), fields, entity), order, whole["$skip"] or 0, whole["$top"]

    def _collection(self, request: Request, entity: str, records: list[dict]) -> Response:
        dnf, order, skip, top = self._options(request, entity)
        chosen = [r for r in records if _passes(dnf, r)]
        if order is not None:
            chosen.sort(key=lambda r: (r[order[0]] is None, r[order[0]]), reverse=order[1])
        return self._page(request, len(chosen), chosen.__getitem__, skip, top)

    def _page(self, request: Request, total: int, item: Callable[[int], dict], skip: int, top: int | None) -> Response:
        """Records skip.. of `total`, at most `top` and at most a page; a link to the rest when the
        page size cut it short [?]."""
        limit = total if top is None else min(total, skip + top)
        end = min(limit, skip + self.page_size)
        body: dict[str, Any] = {"value": [item(i) for i in range(skip, end)]}
        if end < limit:
            kept = [(k, v) for k, v in request.params if k not in ("$skip", "$top")]
            rest = [("$skip", str(end))] + ([] if top is None else [("$top", str(limit - end))])
            query = urlencode(kept + rest, quote_via=quote, safe="$'(),")
            body["@odata.nextLink"] = f"{self.url}{request.path}?{query}"
        return json_response(body)

    def _transactions(self, request: Request) -> Response:
        """Posted lines in RowId order, O(page) however many: the generated ones are ranges of
        numbers (RowId and Date never decrease with the number), the ones posted later follow."""
        dnf, order, skip, top = self._options(request, "GLTransClient")
        if order is not None and order[0] != "RowId":
            raise QueryError("GLTransClient is ordered by RowId only in this emulator.")  # [?]
        remap, booked, drafts, next_number = self.company.snapshot()
        later = list(booked)
        if self.faults.leak_drafts:  # a broken server serving its draft journal as if posted
            later += [line._replace(number=next_number + i) for i, line in enumerate(drafts)]
        later = [line for line in later if _passes(dnf, self._trans(line))]
        generated = self._generated(dnf, remap)

        total = generated.count + len(later)

        def item(i: int) -> dict:
            i = total - 1 - i if order is not None and order[1] else i  # RowId desc: the newest first
            return self._trans(self.company.line(generated.nth(i), remap) if i < generated.count
                               else later[i - generated.count])

        if self.faults.skip_shift and skip:
            skip += 1  # as though a posted line before the window had been deleted since the last page
        response = self._page(request, total, item, skip, top)
        self.faults.page_wait()
        to_post = self.faults.page_served()
        if to_post:
            self.post(to_post)
        return response

    def _generated(self, dnf: Dnf | None, remap: dict[int, int]) -> Selection:
        """The generated lines passing the filter: ranges from its RowId and Date terms, each
        candidate tested where it speaks of other fields."""
        count = self.company.generated
        everything = [(1, count)] if count else []
        if dnf is None:
            return Selection(everything)
        keys = {"RowId": self.row_id, "Date": self.company.generated_date}
        candidates = []
        for conj in dnf:
            ranges = everything
            for term in conj:
                if term.field in keys:
                    ranges = intersect(ranges, monotone_ranges(term, 1, count, keys[term.field]))
            candidates.append(ranges)
        ranges = union(*candidates)
        if any(t.field not in keys for conj in dnf for t in conj):
            ranges = runs(n for n in Selection(ranges) if _passes(dnf, self._trans(self.company.line(n, remap))))
        return Selection(ranges)


def _posting_type(account: dict) -> str:
    if account["type"] == "profitAndLoss":
        return "Revenue" if account["debitCredit"] == "credit" else "Expense"
    return "Liability" if account["debitCredit"] == "credit" else "Asset"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated Uniconta OData API over HTTPS.")
    for option, default in (("port", 8767), ("entries", 5000), ("seed", 1), ("page_size", MAX_PAGE_SIZE)):
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=default)
    emulator = UnicontaEmulator(**vars(parser.parse_args(argv)))
    emulator.start()
    print(f"Uniconta emulator: {emulator.entry_count()} posted lines; connection JSON:\n  {emulator.connection()}\n"
          f"  its certificate: REQUESTS_CA_BUNDLE={emulator.ca_file}\nCtrl-C stops it.", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
