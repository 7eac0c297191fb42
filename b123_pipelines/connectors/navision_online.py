"""Navision Online: Dynamics NAV's pages published as OData v4 web services.

Where: `{base_url}/Company('<company>')/<service>`, base_url being the server instance's OData v4
address (`https://<server>:7048/<instance>/ODataV4`), the company name URL-encoded and
case-sensitive, each service the name the customer gave a page on NAV's Web Services page
(`services`, defaults below). Auth: HTTP Basic, the NAV user name and its web service access key.

Paging: the server's own, 1,000 records a page by default, by `@odata.nextLink` links carrying a
`$skiptoken`, followed unchanged. Incremental: G/L entries are immutable once posted and numbered
by an increasing `Entry_No`, so the cursor `{"entry_no": N}` is the highest number stored so far.
An update counts the entries above it (`/$count`) and asks the highest (`$orderby=Entry_No desc
&$top=1`); up to that number the entries are read as `Entry_No` ranges of about a server page each
(`$filter=Entry_No gt A and Entry_No le B&$orderby=Entry_No`), fetched side by side and handed on
in order (kit/ranges.py), so the cursor only ever covers committed ranges. Entries posted meanwhile
get higher numbers and come next update. A page must come sorted as asked; an entry at or below
the one before is a repeat (a line booked while we page shifts the server's pages) and is dropped.

Dimensions: the `dimension_values` rows carry the dimension's code (`AFDELING`, `PROJEKT`, ...).
NAV puts two dimensions on every G/L entry, the company's global dimensions 1 and 2
(`Global_Dimension_1_Code`, `Global_Dimension_2_Code`): they take `transactions.dimension_1` and
`dimension_2`, and a dimension value's `slot` is its `Global_Dimension_No` (1 or 2; another
dimension's values are listed with no slot). Slot 3 stays empty: the G/L entries page carries the
rest of an entry's dimensions only as a `Dimension_Set_ID`, whose members live in the Dimension Set
Entries table, a page the connection does not publish. Reading a third dimension would mean a
fifth service and a join per dimension set; the contract's four services do not offer it.

Drafts: unposted general journal lines (`GeneralJournalLines`) are never figures. They are read only
for the draft_exclusion check: one journal line posts as up to two G/L entries (its account, and
its balancing account with the opposite amount), so each G/L side is a `DraftLine`. [?] A
published page 39 "General Journal" shows one journal batch only (the page opens filtered on a
template and batch); a customer who keeps drafts in several batches should publish a page or
query over every general journal line under this service name.

Amounts are in local currency (LCY). The G/L entries page does not say which currency that is, so
`currency` is '' - NAV's own way of writing "local currency" - and amount_in_currency = amount.

Choices the vendor does not document are marked [?].
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import InvalidOperation
from typing import Annotated, Any, Iterator
from urllib.parse import quote, unquote, urlencode, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from b123_pipelines.connectors.base import (
    Account, Capabilities, Connector, DimensionValue, DraftLine, Entry, EntryPage, HttpsUrl, SecretText,
    error_detail, money, whole_number,
)
from b123_pipelines.connectors.kit.auth import BasicAuth
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import NextLink
from b123_pipelines.connectors.kit.ranges import KeyRange, split
from b123_pipelines.connectors.kit.transport import HttpStatusError
from b123_pipelines.errors import ConfigurationError, CredentialsRejected, SyncError

# Entries per Entry_No range: a default server's page (ODataServicesMaxPageSize), so on most
# servers a range is one request. NAV numbers G/L entries one after another, so a range of that
# width holds about that many.
RANGE_SIZE = 1000

WEB_SERVICES = "NAV's Web Services page (search for 'Web Services' in NAV)"

WHAT = {"accounts": "chart of accounts", "entries": "G/L entries", "dimension_values": "dimension values",
        "journal_lines": "general journal lines"}

NEW_KEY = (
    "In NAV, open the user card of {user} and generate a new Web Service Access Key (or extend its "
    "expiry date), then store it for this tenant in budget123's integration settings."
)


def _odata_v4_address(url: str) -> str:
    if not urlsplit(url).path.rstrip("/").endswith("/ODataV4"):
        raise ValueError("must be the server instance's OData v4 address, ending in /ODataV4 "
                         "(e.g. https://nav.example.com:7048/DynamicsNAV110/ODataV4)")
    return url.rstrip("/")


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class NavisionServices(BaseModel):
    """The service name of each page, as published on NAV's Web Services page."""

    model_config = ConfigDict(extra="forbid")

    accounts: Name = "ChartOfAccounts"
    entries: Name = "GLEntries"
    dimension_values: Name = "DimensionValues"
    journal_lines: Name = "GeneralJournalLines"


class NavisionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: Annotated[HttpsUrl, AfterValidator(_odata_v4_address)]
    company: Name  # case-sensitive, as NAV shows it
    username: Name
    web_service_access_key: SecretText
    services: NavisionServices = NavisionServices()


_ENCODED_CHAR = re.compile(r"_x([0-9A-Fa-f]{4})_")


def odata_text(value: Any) -> str:
    """An option value as NAV means it: OData writes characters not allowed in a name as `_xHHHH_`
    ("G/L Account" arrives as "G_x002F_L_x0020_Account", a blank option as "_x0020_")."""
    return _ENCODED_CHAR.sub(lambda m: chr(int(m[1], 16)), str(value or "")).strip()


def _query(params: dict[str, str]) -> str:
    # Spaces as %20, not '+': OData reads the query as a URI, not as a submitted form. [?]
    return urlencode(params, quote_via=quote, safe="$'(),")


class NavisionOnlineConnector(Connector):
    system = "navision_online"
    label = "Navision Online"
    cloud = True
    Settings = NavisionSettings
    # NAV publishes no call budget: the limit is the customer's own server (a NAV server instance,
    # often a small hosted one shared by every user of the books). So we choose to be a polite
    # client: two requests at once (two Entry_No ranges side by side, or a page stored while the
    # next is fetched), at most 10 a second. Two already halve a first sync's waiting on a far-away
    # server; more would weigh on a server the customer's own users work on. A full sync of a
    # million entries is 1,000 pages, under two minutes of that budget; an incremental one is a
    # handful of calls.
    budget = ApiBudget(calls_per_window=600, window_seconds=60, concurrent_calls=2)
    capabilities = Capabilities(draft_lines=True, source_count=True)

    def base_url(self) -> str:
        return self.settings.base_url

    def auth(self) -> BasicAuth:
        return BasicAuth(self.settings.username, self.settings.web_service_access_key)

    # ------------------------------------------------------------------ where and what went wrong
    def _company(self) -> str:
        literal = self.settings.company.replace("'", "''")  # an OData string literal
        return f"/Company('{quote(literal, safe='')}')"

    def _path(self, role: str, suffix: str = "", params: dict[str, str] | None = None) -> str:
        service = getattr(self.settings.services, role)
        path = f"{self._company()}/{quote(service, safe='')}{suffix}"
        return f"{path}?{_query(params)}" if params else path

    def _role_of(self, path: str) -> str | None:
        """Which of our services a failed request's path asked for."""
        segments = [unquote(s) for s in path.split("/")]
        for i, segment in enumerate(segments[:-1]):
            if segment.startswith("Company("):
                for role, service in self.settings.services:
                    if service == segments[i + 1]:
                        return role
        return None

    def explain(self, error: HttpStatusError) -> SyncError | None:
        if error.status == 401:
            return CredentialsRejected(
                self.tenant_id, self.system,
                f"Navision Online refused the user name '{self.settings.username}' with the stored web "
                "service access key (HTTP 401): the key is wrong or has expired.",
                NEW_KEY.format(user=self.settings.username),
            )
        role = self._role_of(error.path)
        if error.status in (400, 404) and role is not None:
            return self._diagnose(role, error)
        return None

    def _diagnose(self, role: str, error: HttpStatusError) -> SyncError:
        """A 400 or 404 for one of our services: the company's name is wrong, the page is not
        published, or the page lacks what we ask of it. The server's wording for each is not
        documented [?], so ask it: the `Company` entity set lists the companies and the service
        document lists the published services (both are always there in OData v4)."""
        service = getattr(self.settings.services, role)
        what = WHAT[role]
        companies = self._names("/Company", "Name")
        company = self.settings.company
        if companies is not None and company not in companies:
            alike = [c for c in companies if c.casefold() == company.casefold()]
            hint = (f" (company names are case-sensitive: it has '{alike[0]}')" if alike
                    else f" (it has {', '.join(repr(c) for c in sorted(companies)) or 'none'})")
            return ConfigurationError(
                self.tenant_id, self.system,
                f"Navision Online has no company named '{company}'{hint}.",
                "Correct the company name in the tenant's connection settings, exactly as NAV writes it.",
            )
        published = self._names("/", "name")
        if published is not None and service not in published:
            return ConfigurationError(
                self.tenant_id, self.system,
                f"Navision Online does not publish the service '{service}' that budget123 reads the "
                f"{what} from.",
                f"Publish the page as a web service named '{service}' on {WEB_SERVICES} (or store the "
                "name it is published under in the tenant's connection settings); then update again.",
            )
        return self.bad_data(
            f"refused the request for the {what} (service '{service}', HTTP {error.status}: "
            f"{error_detail(error.body) or 'no detail'}); the published page may lack a field budget123 "
            "reads.")

    def _names(self, path: str, key: str) -> set[str] | None:
        try:
            body, _ = self.transport.get_json(path)
            return {str(item[key]) for item in body["value"]}
        except Exception:  # a diagnosis only: without it the message is less precise, not wrong
            return None

    # ------------------------------------------------------------------ chart of accounts, dimensions
    def _records(self, role: str, params: dict[str, str] | None = None) -> Iterator[dict]:
        for raw in self.records(NextLink(), self._path(role, params=params)):
            if not isinstance(raw, dict):
                raise self.bad_data(f"sent a record of its {WHAT[role]} that is not a JSON object.")
            yield raw

    def accounts(self) -> Iterator[Account]:
        # Posting accounts carry the entries; headings and totals are accounts all the same.
        for raw in self._records("accounts"):
            try:
                yield Account(number=str(raw["No"]), name=str(raw.get("Name") or ""),
                              account_type=odata_text(raw["Account_Type"]),
                              blocked=bool(raw.get("Blocked", False)))
            except KeyError as exc:
                raise self.bad_data(f"sent an account without the field {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        for raw in self._records("dimension_values"):
            try:
                slot = int(raw.get("Global_Dimension_No") or 0)  # [?] absent: not a global one
                yield DimensionValue(str(raw["Dimension_Code"]), str(raw["Code"]), str(raw.get("Name") or ""),
                                     slot=slot if slot in (1, 2) else None,
                                     blocked=bool(raw.get("Blocked", False)))
            except KeyError as exc:
                raise self.bad_data(f"sent a dimension value without the field {exc}.") from None
            except (TypeError, ValueError):
                raise self.bad_data(f"sent dimension value {raw.get('Code')} with a Global_Dimension_No "
                                    "that is not a number.") from None

    # ------------------------------------------------------------------ posted entries
    def _count(self, filter_: str) -> int:
        try:
            return whole_number(self.get(self._path("entries", "/$count", {"$filter": filter_})), "$count")
        except ValueError as exc:
            raise self.bad_data(f"answered a count of G/L entries with something else ({exc}).") from None

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        last = int((cursor or {}).get("entry_no", 0))
        pending = self._count(f"Entry_No gt {last}")
        if not pending:
            return
        ranges = split(last, self._newest(last), pending, RANGE_SIZE)
        yield from self.ranged_pages(self._entries_in, ranges, last, "Entry_No",
                                     lambda n: {"entry_no": n}, len(ranges))

    def _newest(self, after: int) -> int:
        """The highest Entry_No above `after` (`after` if none): one entry, the newest first."""
        params = {"$filter": f"Entry_No gt {after}", "$orderby": "Entry_No desc", "$top": "1",
                  "$select": "Entry_No"}
        body = self.get(self._path("entries", params=params))
        rows = body.get("value") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise self.bad_data("answered the question for its newest G/L entry without a list of entries.")
        try:
            return whole_number(rows[0]["Entry_No"], "Entry_No") if rows else after
        except (KeyError, TypeError, ValueError) as exc:
            raise self.bad_data(f"answered the question for its newest G/L entry with something else ({exc}).") from None

    def _entries_in(self, key_range: KeyRange) -> list[Entry]:
        """One Entry_No range, every server page of it, in Entry_No order."""
        params = {"$filter": f"Entry_No gt {key_range.after} and Entry_No le {key_range.upto}",
                  "$orderby": "Entry_No"}
        pages = (items for items, _ in self.pages(NextLink(), self._path("entries", params=params)))
        return self.entries_of_pages(pages, self._entry, key_range.after, "Entry_No")

    def _entry(self, raw: Any) -> Entry:
        if not isinstance(raw, dict):
            raise self.bad_data(f"sent a G/L entry that is not a JSON object ({str(raw)[:40]}).")
        number = raw.get("Entry_No", "?")
        try:
            amount = money(raw["Amount"])
            if "Debit_Amount" in raw and "Credit_Amount" in raw:
                if money(raw["Debit_Amount"]) - money(raw["Credit_Amount"]) != amount:
                    raise ValueError(f"Amount {amount} is not Debit_Amount {raw['Debit_Amount']} less "
                                     f"Credit_Amount {raw['Credit_Amount']}")
            return Entry(
                entry_id=str(whole_number(raw["Entry_No"], "Entry_No")),
                account_number=str(raw["G_L_Account_No"]),
                posting_date=dt.date.fromisoformat(raw["Posting_Date"]),
                amount=amount, currency="", amount_in_currency=amount,
                voucher=str(raw.get("Document_No") or ""),
                text=str(raw.get("Description") or "")[:255],
                entry_type=odata_text(raw.get("Document_Type")),
                dimension_1=str(raw.get("Global_Dimension_1_Code") or ""),
                dimension_2=str(raw.get("Global_Dimension_2_Code") or ""),
            )
        except KeyError as exc:
            raise self.bad_data(f"sent G/L entry {number} without the field {exc}.") from None
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise self.bad_data(f"sent G/L entry {number} with a value that is not valid: {exc}") from None

    def count_entries(self, cursor: dict) -> int:
        return self._count(f"Entry_No le {int((cursor or {}).get('entry_no', 0))}")

    # ------------------------------------------------------------------ for the checks
    def draft_lines(self) -> Iterator[DraftLine]:
        for raw in self._records("journal_lines"):
            try:
                date = dt.date.fromisoformat(raw["Posting_Date"])
                voucher = str(raw.get("Document_No") or "")
                amount = money(raw["Amount_LCY"] if raw.get("Amount_LCY") is not None else raw["Amount"])
            except KeyError as exc:
                raise self.bad_data(f"sent a general journal line without the field {exc}.") from None
            except (TypeError, ValueError) as exc:
                raise self.bad_data(f"sent a general journal line with a value that is not valid: {exc}") from None
            for kind, account, signed in (("Account_Type", "Account_No", amount),
                                          ("Bal_Account_Type", "Bal_Account_No", -amount)):
                if odata_text(raw.get(kind)) == "G/L Account" and raw.get(account):
                    yield DraftLine(voucher, str(raw[account]), date, signed)


__all__ = ["NavisionOnlineConnector", "NavisionServices", "NavisionSettings", "odata_text"]
