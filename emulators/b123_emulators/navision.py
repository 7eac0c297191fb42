"""An emulator of Dynamics NAV's OData v4 web services (budget123's "Navision Online"), over HTTPS.

It serves one deterministic company (company.py) the way a NAV server instance publishes pages:
`/<instance>/ODataV4/Company('<name>')/<service>`, the company name case-sensitive, four published
pages (chart of accounts, G/L entries, dimension values, general journal lines), HTTP Basic with a
user name and web service access key, server-driven paging by `@odata.nextLink` with a
`$skiptoken`, `$filter` (`eq ne gt ge lt le`, joined with `and`; `or` only within one field),
`$orderby` on the page's key (ascending or `desc`), `$top`, `$select`, `/$count`, the service document (`/ODataV4/`),
the `Company` entity set, and OData error bodies `{"error": {"code", "message"}}`. Shapes follow
/work/shared/reference/accounting-apis.md section 3; choices the vendor does not document are
marked [?].

    with NavisionEmulator(entries=600, page_size=50) as emu:      # HTTPS: trust emu.ca_file
        requests.get(emu.base_url + "/Company('CRONUS%20Danmark%20A%2FS')/GLEntries",
                     auth=("BUDGET123", emu.access_key), verify=emu.ca_file)

The books as NAV shows them: accounts with NAV's account types (Posting, Heading, Begin-Total,
End-Total, Total); two global dimensions, AFDELING (departments, from the company's departmental
distributions: NAV has no split distributions, so a split one posts to its first department) and
PROJEKT (on one P&L line in four that has a department), plus OMRÅDE, a dimension that is not
global and so never on a G/L entry; a general journal in which each line is one of the company's
draft vouchers (the account and its balancing account), posted by `post_journal()` into two G/L
entries that keep its document number.

Faults (`emu.faults`, faults.py): revoked (401), forbidden, rate_limit(), retry_after_seconds,
server_errors() through gate(); drip_bytes_per_second and truncate_body from the server base; on
G/L entries pages: page_delay, repeat_boundary_entry, book_while_paging, leak_drafts. Besides
those, `unpublish(service)` (404 for that service) and a wrong company name in the path.

Run it by hand: python -m b123_emulators.navision --port 8766 --entries 5000
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote, urlencode

from b123_emulators.company import BARRED_DEPARTMENTS, DEPARTMENTS, DISTRIBUTIONS, Company, Line, mix
from b123_emulators.company import to_decimal as _decimal
from b123_emulators.query import (
    Dnf,
    QueryError,
    Selection,
    convert,
    intersect,
    matches,
    monotone_ranges,
    parse_odata_filter,
    runs,
    union,
)
from b123_emulators.server import EmulatorServer, HttpError, Request, Response, json_response

INSTANCE = "DynamicsNAV110"
COMPANY = "CRONUS Danmark A/S"
USERNAME = "BUDGET123"
ACCESS_KEY = "x7Gq2mVb9LkP4sTn8wYc3Rf6Hd1Jz5Ua0Ee2Oi4Wp6M="  # 44 characters, like NAV's keys
MAX_PAGE_SIZE = 1000  # the server's ODataServicesMaxPageSize default
SERVICES = {"accounts": "ChartOfAccounts", "entries": "GLEntries",
            "dimension_values": "DimensionValues", "journal_lines": "GeneralJournalLines"}
JOURNAL = ("KASSE", "STANDARD")  # template and batch of the general journal [?]

# The company's account types (e-conomic's names) as NAV's Account_Type options, written as OData v4
# writes an option value with characters not allowed in a name (`-` is `_x002D_`) [?].
ACCOUNT_TYPES = {"profitAndLoss": "Posting", "status": "Posting", "heading": "Heading",
                 "headingStart": "Begin_x002D_Total", "sumInterval": "End_x002D_Total",
                 "totalFrom": "Total", "sumAlpha": "Total"}
DOCUMENT_TYPES = {"customerInvoice": "Invoice", "supplierInvoice": "Invoice",
                  "customerPayment": "Payment", "supplierPayment": "Payment"}
BLANK = "_x0020_"  # a blank option value
GL_ACCOUNT = "G_x002F_L_x0020_Account"

DEPARTMENT_CODES = {1: "SALG", 2: "ADM", 3: "PROD", 4: "LAGER", 5: "UDV"}
AFDELING = {n: DEPARTMENT_CODES[parts[0][0]] for n, _, parts in DISTRIBUTIONS}  # distribution -> value
PROJECTS = (("P-100", "Webshop"), ("P-200", "Nyt lager"), ("P-300", "ERP-skifte"))
# (dimension code, global dimension number, values (code, name, blocked))
DIMENSIONS = (
    ("AFDELING", 1, tuple((DEPARTMENT_CODES[n], name, n in BARRED_DEPARTMENTS) for n, name in DEPARTMENTS)),
    ("PROJEKT", 2, tuple((code, name, False) for code, name in PROJECTS)),
    ("OMRÅDE", 0, (("NORD", "Nordjylland", False), ("SYD", "Sønderjylland", False),
                   ("SJÆL", "Sjælland", False))),
)
_SET_IDS = {pair: i for i, pair in enumerate(
    ((a, p) for a in ("", *DEPARTMENT_CODES.values()) for p in ("", *(c for c, _ in PROJECTS))))}

# Fields each page can be filtered on, with their types; the first key field orders the page.
ENTRY_FIELDS: dict[str, type] = {"Entry_No": int, "Posting_Date": dt.date, "G_L_Account_No": str,
                                 "Document_No": str, "Global_Dimension_1_Code": str,
                                 "Global_Dimension_2_Code": str, "Dimension_Set_ID": int}
ACCOUNT_FIELDS = {"No": str, "Name": str, "Account_Type": str, "Income_Balance": str, "Blocked": bool}
DIMENSION_FIELDS = {"Dimension_Code": str, "Code": str, "Name": str, "Blocked": bool,
                    "Global_Dimension_No": int}
JOURNAL_FIELDS = {"Journal_Template_Name": str, "Journal_Batch_Name": str, "Line_No": int,
                  "Posting_Date": dt.date, "Document_No": str, "Account_No": str}
COMPANY_FIELDS = {"Name": str}
KEYS = {"accounts": ("No",), "entries": ("Entry_No",), "dimension_values": ("Dimension_Code", "Code"),
        "journal_lines": ("Journal_Template_Name", "Journal_Batch_Name", "Line_No"), "Company": ("Name",)}
FIELDS = {"accounts": ACCOUNT_FIELDS, "entries": ENTRY_FIELDS, "dimension_values": DIMENSION_FIELDS,
          "journal_lines": JOURNAL_FIELDS, "Company": COMPANY_FIELDS}
OPTIONS = {"$filter", "$orderby", "$top", "$skiptoken", "$select"}


def nav_number(cents: int) -> Decimal:
    """An amount as NAV writes it in JSON: the shortest exact form (1234.5, 100, 0)."""
    return _decimal(cents).normalize() + 0  # + 0: no exponent, no negative zero


def _literal(value: Any) -> str:
    return f"'{value.replace(chr(39), chr(39) * 2)}'" if isinstance(value, str) else str(value)


_TOKEN = re.compile(r"'(?:[^']|'')*'|[^\s,()']+|[(),]")


def _unquote_literal(raw: str) -> str:
    return raw[1:-1].replace("''", "'") if raw.startswith("'") else raw


def parse_filter(text: str | None, fields: dict[str, type], page: str) -> Dnf | None:
    """An OData `$filter` (query.parse_odata_filter), refused (400) where it has an `or` across two
    fields, which NAV does not support [doc]."""
    dnf = parse_odata_filter(text, fields, f"type 'NAV.{page}'")
    if dnf and len(dnf) > 1 and len({t.field for conj in dnf for t in conj}) > 1:
        raise QueryError("The filter contains an 'or' across different fields, which is not supported.")
    return dnf


def _skiptoken(raw: str, key: tuple[str, ...], fields: dict[str, type]) -> tuple:
    parts = [p for p in _TOKEN.findall(raw) if p != ","]
    if len(parts) != len(key):
        raise QueryError(f"The skip token '{raw}' is not valid.")
    return tuple(convert(_unquote_literal(p), fields[k]) for p, k in zip(parts, key))


class NavisionEmulator(EmulatorServer):
    """A NAV server instance publishing one company's pages as OData v4 web services."""

    server_version = "Microsoft-HTTPAPI/2.0"
    thread_name = "navision-emulator"
    content_type = "application/json; odata.metadata=minimal; charset=utf-8"
    refusals = {
        "revoked": ("The server has rejected the client credentials.", ""),
        "forbidden": ("You do not have the following permissions on TableData G/L Entry: Read.", ""),
        "rate_limited": ("The request was throttled; too many requests.", ""),  # [?] a proxy's, not NAV's
        "server_error": ("An internal error occurred on the server.", ""),
    }
    codes = {400: "BadRequest", 401: "Authentication_InvalidCredentials",
             403: "Authorization_InsufficientPermissions", 404: "BadRequest_NotFound",
             405: "BadRequest_MethodNotAllowed", 429: "Application_TooManyRequests"}

    def __init__(self, entries: int = 1000, seed: int = 1, page_size: int = MAX_PAGE_SIZE,
                 company: str = COMPANY, username: str = USERNAME, access_key: str = ACCESS_KEY,
                 journal_lines: int = 2, instance: str = INSTANCE, port: int = 0, tls: bool = True):
        self.company = Company(entries, seed, drafts=2 * journal_lines)
        super().__init__(port=port, tls=tls)
        self.company_name, self.username, self.access_key = company, username, access_key
        self.page_size, self.instance = page_size, instance
        self.services = dict(SERVICES)
        self.published = set(self.services.values())
        self._company_id = str(uuid.UUID(int=mix(seed) << 64 | mix(seed + 1)))

    @property
    def base_url(self) -> str:
        """The connection's base_url: the instance's OData v4 address."""
        return f"{self.url}/{self.instance}/ODataV4"

    def connection(self, **changes: Any) -> dict:
        """budget123's connection JSON for this server."""
        return {"base_url": self.base_url, "company": self.company_name, "username": self.username,
                "web_service_access_key": self.access_key, **changes}

    # ------------------------------------------------------------------ what happens later
    def book_entries(self, count: int, on: dt.date | None = None) -> list[int]:
        """Posts count/2 balanced vouchers (two G/L entries each); returns the new entry numbers."""
        return self.company.book_entries(count, on=on)

    def add_journal_lines(self, count: int = 1) -> list[dict]:
        """Puts `count` lines in the general journal, unposted; returns them as the page shows them."""
        lines = self.company.add_draft(2 * count)
        return [line for line in self.journal_lines() if line["Document_No"] in {str(v.voucher) for v in lines}]

    def post_journal(self) -> list[int]:
        """Posts every journal line (two G/L entries each, its document number kept) and empties
        the journal; returns the new entry numbers."""
        return self.company.book_drafts()

    def unpublish(self, service: str) -> None:
        """Takes a page off NAV's Web Services page: its service answers 404."""
        self.published.discard(service)

    def publish(self, service: str) -> None:
        self.published.add(service)

    # ------------------------------------------------------------------ truth for tests
    def entry_count(self) -> int:
        return self.company.entry_count()

    def posted_entries(self) -> list[dict]:
        return [self._entry(line) for line in self.company.posted_lines()]

    def sums_by_account_month(self) -> dict[tuple[int, dt.date], Decimal]:
        return {key: _decimal(cents) for key, cents in self.company.sums().items()}

    def sums_by_dimension(self) -> dict[tuple[str, str], Decimal]:
        """Posted amounts per (dimension code, value code), for the global dimensions on entries."""
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for line in self.company.posted_lines():
            for dimension, code in zip(("AFDELING", "PROJEKT"), self._dimensions(line)):
                if code:
                    sums[(dimension, code)] += line.base
        return {key: _decimal(cents) for key, cents in sums.items()}

    def accounts(self) -> list[dict]:
        with self.company.lock:
            accounts = list(self.company.accounts.values())
        return sorted((self._account(a) for a in accounts), key=lambda a: a["No"])

    def dimension_values(self) -> list[dict]:
        return [{"Dimension_Code": dimension, "Code": code, "Name": name, "Dimension_Value_Type": "Standard",
                 "Blocked": blocked, "Global_Dimension_No": number}  # [?] on the published page
                for dimension, number, values in sorted(DIMENSIONS) for code, name, blocked in values]

    def journal_lines(self) -> list[dict]:
        drafts = self.company.snapshot().drafts
        return [self._journal_line(i, debit, credit)
                for i, (debit, credit) in enumerate(zip(drafts[::2], drafts[1::2]), 1)]

    # ------------------------------------------------------------------ the pages' records
    def _dimensions(self, line: Line) -> tuple[str, str, int]:
        afdeling = AFDELING.get(line.distribution, "")
        h = mix(self.company.seed * 0x632BE59BD9B4E019 ^ line.voucher)
        projekt = PROJECTS[(h >> 8) % len(PROJECTS)][0] if afdeling and h & 3 == 0 else ""
        return afdeling, projekt, _SET_IDS[(afdeling, projekt)]

    def _entry(self, line: Line) -> dict:
        afdeling, projekt, set_id = self._dimensions(line)
        return {"@odata.etag": f"W/\"JzQ0O{line.number}Oyc=\"", "Entry_No": line.number,
                "Posting_Date": line.date, "Document_Type": DOCUMENT_TYPES.get(line.entry_type, BLANK),
                "Document_No": str(line.voucher), "G_L_Account_No": str(line.account),
                "Description": line.text[:50],  # Text[50] in NAV [?]
                "Amount": nav_number(line.base), "Debit_Amount": nav_number(max(line.base, 0)),
                "Credit_Amount": nav_number(max(-line.base, 0)), "Global_Dimension_1_Code": afdeling,
                "Global_Dimension_2_Code": projekt, "Dimension_Set_ID": set_id}

    def _account(self, a: dict) -> dict:
        income = a["type"] == "profitAndLoss" or (a["type"] != "status" and a["number"] < 5000)
        return {"No": str(a["number"]), "Name": a["name"], "Account_Type": ACCOUNT_TYPES[a["type"]],
                "Income_Balance": "Income_x0020_Statement" if income else "Balance_x0020_Sheet",
                "Blocked": a["barred"]}

    def _journal_line(self, i: int, debit: Line, credit: Line) -> dict:
        afdeling, projekt, _ = self._dimensions(debit)
        return {"Journal_Template_Name": JOURNAL[0], "Journal_Batch_Name": JOURNAL[1], "Line_No": 10000 * i,
                "Posting_Date": debit.date, "Document_Type": BLANK, "Document_No": str(debit.voucher),
                "Account_Type": GL_ACCOUNT, "Account_No": str(debit.account), "Description": debit.text[:50],
                "Currency_Code": "" if debit.currency == "DKK" else debit.currency,
                "Amount": nav_number(debit.amount), "Amount_LCY": nav_number(debit.base),
                "Bal_Account_Type": GL_ACCOUNT, "Bal_Account_No": str(credit.account),
                "Shortcut_Dimension_1_Code": afdeling, "Shortcut_Dimension_2_Code": projekt}

    # ------------------------------------------------------------------ HTTP
    def route(self, request: Request) -> Response:
        if request.method != "GET":
            raise HttpError(405, "Only reading is emulated.")
        self._authenticate(request.headers.get("Authorization", ""))
        self.gate()
        try:
            return self._dispatch(request)
        except QueryError as exc:
            raise HttpError(400, exc.message, code="BadRequest") from None

    def error_response(self, error: HttpError) -> Response:
        code = error.extra.get("code") or self.codes.get(error.status, "Internal_ServerError")
        message = f"{error.message} {error.hint}".strip() if error.status >= 500 else error.message
        headers = {"WWW-Authenticate": 'Basic realm=""'} if error.status == 401 else None
        return json_response({"error": {"code": code, "message": message}}, error.status, headers)

    def response_headers(self, response: Response) -> dict[str, str]:
        return {"OData-Version": "4.0"}

    def _authenticate(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        try:
            user, _, key = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = key = None
        # [?] NAV user names compare without case, keys exactly.
        if scheme != "Basic" or user is None or user.casefold() != self.username.casefold() or key != self.access_key:
            raise HttpError(401, self.refusals["revoked"][0])

    def _dispatch(self, request: Request) -> Response:
        segments = [unquote(s) for s in request.path.split("/")[1:]]
        if segments[:2] != [self.instance, "ODataV4"]:
            raise HttpError(404, "The requested resource was not found.")
        rest = [s for s in segments[2:] if s]
        root = self.base_url
        if not rest:  # the service document: what is published
            names = ["Company", *sorted(self.published)]
            return json_response({"@odata.context": f"{root}/$metadata",
                                  "value": [{"name": n, "kind": "EntitySet", "url": n} for n in names]})
        if rest == ["Company"]:
            company = {"Name": self.company_name, "Display_Name": self.company_name, "Id": self._company_id}
            return self._page(request, "Company", [company], f"{root}/$metadata#Company")
        match = re.fullmatch(r"Company\('((?:[^']|'')*)'\)", rest[0])
        if not match:
            raise HttpError(404, f"Resource not found for the segment '{rest[0]}'.", code="BadRequest_NotFound")
        name = match[1].replace("''", "'")
        if name != self.company_name:  # case-sensitive [doc]
            # [?] The status and wording NAV gives an unknown company are not documented.
            raise HttpError(400, f"Cannot process the request because the company '{name}' cannot be found. "
                                 "You can see the available companies by accessing the default OData web "
                                 "service, Company.", code="Internal_CompanyNotFound")
        role = next((r for r, s in self.services.items() if len(rest) > 1 and s == rest[1]), None)
        if role is None or rest[1] not in self.published or rest[2:] not in ([], ["$count"]):
            segment = rest[1] if len(rest) > 1 else rest[0]
            raise HttpError(404, f"Resource not found for the segment '{segment}'.",
                            code="BadRequest_ResourceNotFound")  # [seen] in Microsoft's table of codes
        context = f"{root}/$metadata#Company('{quote(self.company_name, safe='')}')/{rest[1]}"
        counting = rest[2:] == ["$count"]
        if role == "entries":
            return self._entries(request, context, counting)
        items = {"accounts": self.accounts, "dimension_values": self.dimension_values,
                 "journal_lines": self.journal_lines}[role]()
        return self._page(request, role, items, context, counting)

    # ------------------------------------------------------------------ paging
    def _options(self, request: Request, role: str) -> tuple[dict[str, str], Dnf | None, int | None]:
        params = dict(request.params)
        unknown = sorted(set(params) - OPTIONS)
        if unknown:
            raise QueryError(f"The query parameter '{unknown[0]}' is not supported.")
        order = params.get("$orderby", "").split()
        if order and (order[0] != KEYS[role][0] or order[1:] not in ([], ["asc"], ["desc"])):
            raise QueryError(f"The emulator orders this page only by its key, {KEYS[role][0]}.")  # [?]
        top = params.get("$top")
        if top is not None and not top.isdigit():
            raise QueryError(f"The value '{top}' of $top is not a non-negative integer.")
        page = self.services.get(role, role)
        return params, parse_filter(params.get("$filter"), FIELDS[role], page), None if top is None else int(top)

    def _page(self, request: Request, role: str, items: list[dict], context: str,
              counting: bool = False) -> Response:
        """A small page held whole: filtered, in key order, after the skip token, `page_size` at a time."""
        params, dnf, top = self._options(request, role)
        key, fields = KEYS[role], FIELDS[role]
        desc = _descending(params)
        chosen = sorted((i for i in items if dnf is None or matches(dnf, i.get)),
                        key=lambda i: tuple(i[k] for k in key), reverse=desc)
        if counting:
            return _count(len(chosen))
        if top is not None:
            chosen = chosen[:top]
        if "$skiptoken" in params:
            after = _skiptoken(params["$skiptoken"], key, fields)
            chosen = [i for i in chosen if (tuple(i[k] for k in key) < after) == desc
                      and tuple(i[k] for k in key) != after]
        page = chosen[:self.page_size]
        more = len(chosen) > len(page)
        last = tuple(page[-1][k] for k in key) if page else ()
        return self._envelope(request, context, page, last if more else None, params.get("$select"))

    def _entries(self, request: Request, context: str, counting: bool) -> Response:
        """G/L entries in Entry_No order, O(page) however many there are: the generated ones are
        ranges of numbers, the ones posted later follow them."""
        params, dnf, top = self._options(request, "entries")
        remap, booked, drafts, next_number = self.company.snapshot()
        later = list(booked)
        if self.faults.leak_drafts:  # a broken server serving its journal as if it were posted
            later += [line._replace(number=next_number + i) for i, line in enumerate(drafts)]
        line_of = lambda n: self.company.line(n, remap)
        generated = self._generated(dnf, line_of)
        later = [line for line in later if dnf is None or matches(dnf, self._entry(line).get)]
        total = generated.count + len(later)
        if counting:
            return _count(total)
        desc = _descending(params)
        if "$skiptoken" not in params:
            start = 0
        else:
            after = int(_skiptoken(params["$skiptoken"], ("Entry_No",), ENTRY_FIELDS)[0])
            below = generated.count_le(after - desc) + sum(1 for line in later if line.number <= after - desc)
            start = total - below if desc else below
        end = min(total, start + self.page_size, total if top is None else top)
        # Position i in the order asked is index i ascending, or total - 1 - i newest first.
        indexes = [total - 1 - i if desc else i for i in range(start, end)]
        if self.faults.repeat_boundary_entry and start > 0 and indexes:
            indexes.insert(0, total - start if desc else start - 1)  # the previous page's last entry, again
        lines = [line_of(generated.nth(i)) if i < generated.count else later[i - generated.count]
                 for i in indexes]
        more = end < min(total, total if top is None else top)
        body = self._envelope(request, context, [self._entry(line) for line in lines],
                              (lines[-1].number,) if more else None, params.get("$select"))
        if len(lines) > 1:  # a page of entries, not the question for the newest one
            self.faults.page_wait(lines[0].number)
        to_book = self.faults.page_served()
        if to_book:
            self.book_entries(to_book)
        return body

    def _generated(self, dnf: Dnf | None, line_of: Callable[[int], Line]) -> Selection:
        """The generated entries passing the filter: ranges from its Entry_No terms, each candidate
        tested where it speaks of other fields."""
        everything = [(1, self.company.generated)] if self.company.generated else []
        if dnf is None:
            return Selection(everything)
        candidates = []
        for conj in dnf:
            ranges = everything
            for term in conj:
                if term.field == "Entry_No":
                    ranges = intersect(ranges, monotone_ranges(term, 1, self.company.generated, int))
            candidates.append(ranges)
        ranges = union(*candidates)
        if any(t.field != "Entry_No" for conj in dnf for t in conj):
            ranges = runs(n for n in Selection(ranges) if matches(dnf, self._entry(line_of(n)).get))
        return Selection(ranges)

    def _envelope(self, request: Request, context: str, items: Iterable[dict], next_key: tuple | None,
                  select: str | None) -> Response:
        if select:
            wanted = {f.strip() for f in select.split(",")}
            items = [{k: v for k, v in i.items() if k in wanted or k.startswith("@")} for i in items]
        body: dict[str, Any] = {"@odata.context": context, "value": list(items)}
        if next_key is not None:
            kept = [(k, v) for k, v in request.params if k != "$skiptoken"]
            token = ",".join(_literal(k) for k in next_key)
            query = urlencode([*kept, ("$skiptoken", token)], quote_via=quote, safe="$'(),")
            body["@odata.nextLink"] = f"{self.url}{request.path}?{query}"
        return json_response(body)


def _descending(params: dict[str, str]) -> bool:
    return params.get("$orderby", "").split()[1:] == ["desc"]


def _count(n: int) -> Response:
    return Response(200, str(n).encode(), content_type="text/plain; charset=utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated NAV server instance (OData v4) over HTTPS.")
    for option, default in (("port", 8766), ("entries", 5000), ("seed", 1), ("page-size", MAX_PAGE_SIZE)):
        parser.add_argument(f"--{option}", type=int, default=default)
    emulator = NavisionEmulator(**vars(parser.parse_args(argv)))  # the options are the constructor's
    emulator.start()
    print(f"NAV emulator with {emulator.entry_count()} G/L entries; trust REQUESTS_CA_BUNDLE={emulator.ca_file}\n"
          f"connection JSON: {json.dumps(emulator.connection())}\nCtrl-C stops it.", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
