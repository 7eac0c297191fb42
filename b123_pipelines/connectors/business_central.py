"""Microsoft Dynamics 365 Business Central, through its API v2.0.

Where: `{api_url}/v2.0/{entra_tenant}/{environment}/api/v2.0/companies({id})/...`; the company's id is
looked up by its name as BC shows it (`/companies`).

Auth: OAuth 2.0 client credentials against Microsoft Entra ID, `{login_url}/{entra_tenant}/oauth2/
v2.0/token` with scope `https://api.businesscentral.dynamics.com/.default`, through the kit's
`OAuth2ClientCredentials` (MSAL). A token lives about an hour; MSAL's cache is kept per tenant,
encrypted, between runs (`token_caches`, through `Connector.token_store`), MSAL asks for a new token
shortly before the old one expires, and a 401 mid-sync renews it once and sends the request again.
A 401 from BC after that renewal means Entra ID issued the token but BC refuses the app: it is not on
BC's "Microsoft Entra Applications" page (or not enabled there). Entra's refusals arrive as the kit's
`TokenRefused` and are told apart by their AADSTS codes (below, `explain_token_refused`).

Paging: BC's own, `@odata.nextLink` links carrying a `$skiptoken`, followed unchanged; the page
size is asked with `Prefer: odata.maxpagesize=N`.

Incremental: a G/L entry can change after posting - a user can correct its dimensions, and BC
then moves its `lastModifiedDateTime`, which can be months after its posting date - so entries are
read by `lastModifiedDateTime` (capability `entries_change`: the engine replaces the stored version
and recomputes the months of both). Each run first asks for the newest `lastModifiedDateTime` (with
`$count=true`, for the live log's page total) and then reads, ordered by `lastModifiedDateTime,
entryNumber`, the entries changed after the cursor minus a look-back window and up to that newest
time. The upper bound means an entry changed while we page is not read twice in one run (it is
read by the next); the look-back re-reads the last `LOOK_BACK` before the cursor, because a time
is stamped when a posting writes and a posting that commits later can carry a time we already
passed. Re-read entries are replaced by themselves. The cursor `{"modified_after", "entry_number_max"}`
moves with each page's entries; an entry at or before the last one read (same key order) is a
repeat of a page boundary and is dropped.

A first sync (no cursor) is read instead as entryNumber ranges side by side (kit/ranges.py; G/L
entries are numbered one after another), up to the highest number at its start. Its cursor
`{"modified_after": T0, "first_sync": {"entry_no": N, "upto": TOP}}` says how far it came: T0 is
the newest lastModifiedDateTime asked before the first range, and a killed first sync resumes
after entry N, up to the same TOP. After the last range it becomes `{"modified_after": T0,
"entry_number_max": TOP}`, so the next update re-reads, with LOOK_BACK, every entry posted or
changed while the first sync ran (replaced by itself where it did not change). Incremental
updates stay one page after another: their key (lastModifiedDateTime, entryNumber) bunches (a
posting stamps all its lines alike) and is not a whole number, and an update is a few pages.

Dimensions: `dimension_values` carry the dimension's code (AFDELING, PROJEKT, ...). BC's G/L
entries carry any number of dimensions, as dimension set lines (`$expand=dimensionSetLines`); the
warehouse has three columns. Slots 1 and 2 are the company's global dimensions 1 and 2, and slot 3
its shortcut dimension 3, all from `generalLedgerSetup` [doc: API v2.0 generalLedgerSetup;
shortcut dimensions 1 and 2 are BC's global dimensions 1 and 2]. See `_slots`.

Drafts: journal lines (`/journals({id})/journalLines`) are unposted and never figures; they are
read only for the draft_exclusion check. Reconciliation: per fiscal year (from `/accountingPeriods`)
and posting account, BC's own `netChange` of `/accounts` with a `dateFilter` range on that year [?].

Recorded quirks of real responses handled here: enum values with `_xHHHH_` escapes (`"_x0020_"` is
a blank document type; `Begin_x0020_Total`), amounts as JSON numbers in shortest form (read as
exact Decimals, net = debitAmount - creditAmount), `lastModifiedDateTime` with 0 to 7 fraction
digits, `@odata.etag` on every row (ignored).

Choices the vendor does not document are marked [?].
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import InvalidOperation
from typing import Annotated, Any, Iterator
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from b123_pipelines.connectors.base import (
    Account, Capabilities, Connector, DimensionValue, DraftLine, Entry, EntryPage, HttpsUrl, PeriodTotal,
    SecretText, error_detail, money, whole_number,
)
from b123_pipelines.connectors.kit.auth import OAuth2ClientCredentials, TokenRefused
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import NextLink
from b123_pipelines.connectors.kit.ranges import KeyRange, split
from b123_pipelines.connectors.kit.transport import HttpStatusError, HttpTuning
from b123_pipelines.errors import AccessDenied, ConfigurationError, CredentialsRejected, SyncError

SCOPE = "https://api.businesscentral.dynamics.com/.default"
PAGE_SIZE = 1000  # asked with Prefer: odata.maxpagesize (BC's own is 20,000, heavy with dimension sets)
LOOK_BACK = dt.timedelta(minutes=10)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

ENTRA_APPS = "the page \"Microsoft Entra Applications\" in Business Central"
APP_SECRETS = "Microsoft Entra admin center >> App registrations >> the app >> Certificates & secrets"

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DOMAIN = re.compile(r"(?=.{4,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _entra_tenant(value: str) -> str:
    if _GUID.fullmatch(value) or _DOMAIN.fullmatch(value):
        return value
    raise ValueError("must be the Microsoft Entra tenant's id (a GUID, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47) "
                     "or one of its domains (e.g. contoso.onmicrosoft.com)")


def _client_id(value: str) -> str:
    if _GUID.fullmatch(value):
        return value
    raise ValueError("must be the app registration's Application (client) ID, a GUID")


def _environment(value: str) -> str:
    # [?] BC environment names: letters, digits, '-' and '_', at most 30 characters.
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,29}", value):
        return value
    raise ValueError("must be the Business Central environment's name, e.g. production (letters, digits, "
                     "'-' and '_', at most 30 characters)")


def _company(value: str) -> str:
    # BC's company names are at most 30 characters (Company.Name, Text[30]).
    if not value.strip() or len(value) > 30 or any(ord(c) < 32 for c in value):
        raise ValueError("must be the company's name as Business Central shows it (1 to 30 characters)")
    return value


def _https(value: str) -> str:
    # MSAL accepts only https authorities, also on this machine.
    if urlsplit(value).scheme != "https":
        raise ValueError("must be an https:// address")
    return value


class BusinessCentralSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entra_tenant: Annotated[str, AfterValidator(_entra_tenant)]
    environment: Annotated[str, AfterValidator(_environment)]
    company: Annotated[str, AfterValidator(_company)]
    client_id: Annotated[str, AfterValidator(_client_id)]
    client_secret: SecretText
    login_url: Annotated[HttpsUrl, AfterValidator(_https)] = "https://login.microsoftonline.com"
    api_url: HttpsUrl = "https://api.businesscentral.dynamics.com"


def decoded(value: Any) -> str:
    """An enum value as BC means it: `_xHHHH_` escapes undone, blank (`_x0020_`) as ''."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)), str(value or "")).strip()


def parse_time(value: Any) -> dt.datetime:
    """lastModifiedDateTime, whatever its number of fraction digits (`59Z`, `59.58Z`, `59.583Z`)."""
    match = _TIME.fullmatch(str(value))
    if not match:
        raise ValueError(f"lastModifiedDateTime {str(value)[:40]!r} is not a date and time")
    fraction = (match[2] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match[3] == "Z" else match[3]
    return dt.datetime.fromisoformat(f"{match[1]}.{fraction}{zone}").astimezone(dt.timezone.utc)


def odata_time(moment: dt.datetime) -> str:
    """A datetime as an OData literal, exactly: `2025-01-31T12:00:59.583Z`."""
    text = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def _guid(value: Any, what: str) -> str:
    """An id from BC that goes into a URL: only ever a GUID."""
    if isinstance(value, str) and _GUID.fullmatch(value):
        return value
    raise ValueError(f"{what} id {str(value)[:40]!r} is not a GUID")


class BusinessCentralConnector(Connector):
    system = "business_central"
    label = "Business Central"
    Settings = BusinessCentralSettings
    # 6,000 requests per 5-minute sliding window and 100 at once, per app [doc].
    budget = ApiBudget(calls_per_window=6000, window_seconds=300, concurrent_calls=100)
    capabilities = Capabilities(draft_lines=True, source_totals=True, source_count=True, entries_change=True)

    def __post_init__(self) -> None:
        self._company_id: str | None = None
        self._setup: dict | None = None
        super().__post_init__()

    # ---------------------------------------------------------------- composition
    def base_url(self) -> str:
        s = self.settings
        return f"{s.api_url}/v2.0/{quote(s.entra_tenant)}/{quote(s.environment)}/api/v2.0"

    def auth(self) -> OAuth2ClientCredentials:
        s = self.settings
        return OAuth2ClientCredentials(f"{s.login_url}/{s.entra_tenant}", s.client_id, s.client_secret, SCOPE,
                                       store=self.token_store, timeout=HttpTuning.from_dict(self.http).timeout)

    def headers(self) -> dict[str, str]:
        return {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}

    def explain(self, error: HttpStatusError) -> SyncError | None:
        code = str(((error.body or {}).get("error") or {}).get("code", "")) if isinstance(error.body, dict) else ""
        if error.status == 401:
            # The kit renewed the token once already: Entra ID issues tokens, BC refuses the app.
            return AccessDenied(
                self.tenant_id, self.system,
                f"Business Central refused budget123's app (client id {self.settings.client_id}) although "
                f"Microsoft Entra ID signed it in ({code or 'HTTP 401'}): the app is not registered in "
                f"environment '{self.settings.environment}', or not enabled there.",
                f"The tenant's Business Central administrator must add the app on {ENTRA_APPS}, set its "
                "state to Enabled and give it permission sets that can read the general ledger (e.g. "
                "D365 READ); then update again.",
            )
        if error.status == 403:
            return AccessDenied(
                self.tenant_id, self.system,
                f"Business Central refused budget123's app access to {error.path} ({code or 'HTTP 403'}: "
                f"{error_detail(error.body)}).",
                f"The tenant's Business Central administrator must give the app permission sets that can "
                f"read the general ledger, dimensions and journals on {ENTRA_APPS}; then update again.",
            )
        if error.status == 404 and error.path.endswith("/companies"):
            return ConfigurationError(
                self.tenant_id, self.system,
                f"Business Central has no environment '{self.settings.environment}' in Microsoft Entra "
                f"tenant '{self.settings.entra_tenant}' ({error_detail(error.body) or code or 'HTTP 404'}).",
                "The tenant's administrator must give the environment's name as the Business Central admin "
                "center lists it, stored with 'b123 tenant credentials'.",
            )
        if error.status == 429:
            return self.unavailable(
                "kept refusing calls because the app's limit (6,000 requests in 5 minutes) was reached, "
                "even after waiting as Business Central asked.")
        return None

    def explain_token_refused(self, exc: TokenRefused) -> SyncError:
        """Entra ID's refusal to issue a token, in words the tenant's administrator can act on."""
        s, found = self.settings, re.search(r"AADSTS\d+", exc.description)
        aadsts = found[0] if found else exc.error
        if aadsts in ("AADSTS7000215", "AADSTS7000222") or exc.error == "invalid_client":
            return CredentialsRejected(
                self.tenant_id, self.system,
                f"Microsoft Entra ID rejected the client secret of budget123's app (client id {s.client_id}; "
                f"{aadsts}: the secret is wrong, expired or deleted).",
                f"The tenant's administrator must create a new client secret ({APP_SECRETS}) and store its "
                "value for this tenant in budget123 ('b123 tenant credentials'). Nothing already loaded was "
                "lost; the next update resumes where this one stopped.",
            )
        if aadsts == "AADSTS90002" or exc.error == "invalid_tenant":
            return ConfigurationError(
                self.tenant_id, self.system,
                f"Microsoft Entra ID does not know the tenant '{s.entra_tenant}' ({aadsts}).",
                "The tenant's administrator must give the Entra tenant's id (Microsoft Entra admin center >> "
                "Overview >> Tenant ID) or one of its domains, stored with 'b123 tenant credentials'.",
            )
        if aadsts == "AADSTS700016" or exc.error == "unauthorized_client":
            return CredentialsRejected(
                self.tenant_id, self.system,
                f"Microsoft Entra tenant '{s.entra_tenant}' has no app with client id {s.client_id} ({aadsts}).",
                "The tenant's administrator must give the Application (client) ID of the app registration "
                "budget123 uses (or consent to it in this tenant), stored with 'b123 tenant credentials'.",
            )
        if exc.error in ("temporarily_unavailable", "server_error"):
            return self.unavailable(f"could not be signed in to: Microsoft Entra ID answered {exc.error}.")
        return AccessDenied(
            self.tenant_id, self.system,
            f"Microsoft Entra ID refused budget123's app a token for Business Central ({exc.error}: "
            f"{exc.description.split(' Trace ID:')[0][:300]}).",
            "The tenant's administrator must check the app registration in Microsoft Entra ID (its API "
            "permission for Dynamics 365 Business Central, with admin consent); then update again.",
        )

    # ---------------------------------------------------------------- requests: Entra's refusals too
    def _all(self, path: str, params: dict | None = None) -> Iterator[dict]:
        return self.records(NextLink(page_size=PAGE_SIZE), path, params)

    # ---------------------------------------------------------------- the company
    def _company_path(self) -> str:
        if self._company_id is None:
            companies = list(self._all("/companies"))
            wanted = self.settings.company
            found = ([c for c in companies if c.get("name") == wanted]
                     or [c for c in companies if c.get("displayName") == wanted]
                     or [c for c in companies if str(c.get("name", "")).casefold() == wanted.casefold()])
            if len(found) != 1:
                names = ", ".join(f"'{c.get('name')}'" for c in companies[:20]) or "none"
                raise ConfigurationError(
                    self.tenant_id, self.system,
                    f"Business Central environment '{self.settings.environment}' has no company named "
                    f"'{wanted}' (its companies: {names}).",
                    "The tenant's administrator must give the company's name exactly as Business Central shows "
                    "it, stored with 'b123 tenant credentials' (and the app must have access to that company).",
                )
            try:
                self._company_id = _guid(found[0].get("id"), "company")
            except ValueError as exc:
                raise self.bad_data(f"sent {exc}.") from None
        return f"/companies({self._company_id})"

    def _setup_row(self) -> dict:
        if self._setup is None:
            rows = list(self._all(self._company_path() + "/generalLedgerSetup"))
            if not rows:
                raise self.bad_data("sent no general ledger setup for the company.")
            self._setup = rows[0]
        return self._setup

    def _slots(self) -> dict[str, int]:
        """Which transactions column carries which dimension: {dimension code: slot}.

        Slots 1 and 2 are the company's global dimensions 1 and 2 (`shortcutDimension1Code` and
        `2Code` of generalLedgerSetup, which BC keeps equal to the global ones): every company has
        them, BC stores them on every entry and filters its own reports by them, so they are what a
        budget is most often split by. Slot 3 is shortcut dimension 3, the next one the company
        itself chose to show on journal lines and entries, so the next most likely to be budgeted;
        the dimensions after it are in `dimension_values` (no slot) but not on transactions. The
        first dimensions in `/dimensions` would be a guess: that list is sorted by code.
        """
        setup = self._setup_row()
        slots: dict[str, int] = {}
        for slot in (1, 2, 3):
            code = str(setup.get(f"shortcutDimension{slot}Code") or "")
            if code and code not in slots:
                slots[code] = slot
        return slots

    # ---------------------------------------------------------------- chart of accounts, dimensions
    def accounts(self) -> Iterator[Account]:
        for raw in self._all(self._company_path() + "/accounts"):
            try:
                # Posting accounts carry the entries; headings and totals are accounts too.
                yield Account(number=str(raw["number"]), name=str(raw.get("displayName") or ""),
                              account_type=decoded(raw["accountType"]), blocked=bool(raw.get("blocked", False)))
            except (KeyError, TypeError) as exc:
                raise self.bad_data(f"sent an account without {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        slots = self._slots()
        codes = {raw.get("id"): str(raw.get("code", "")) for raw in self._all(self._company_path() + "/dimensions")}
        for raw in self._all(self._company_path() + "/dimensionValues"):
            dimension = codes.get(raw.get("dimensionId"))
            if not dimension or "code" not in raw:
                raise self.bad_data(f"sent dimension value {str(raw.get('code'))[:40]!r} of a dimension it "
                                    "does not list.")
            yield DimensionValue(dimension, str(raw["code"]), str(raw.get("displayName") or ""),
                                 slot=slots.get(dimension))

    # ---------------------------------------------------------------- posted entries
    def _entries_path(self) -> str:
        return self._company_path() + "/generalLedgerEntries"

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        if cursor is None or cursor.get("first_sync"):
            yield from self._first_sync(cursor)
            return
        after = parse_time(cursor["modified_after"]) if cursor and cursor.get("modified_after") else None
        number_max = int((cursor or {}).get("entry_number_max", 0))
        since = after - LOOK_BACK if after is not None else None
        newest, count = self._newest(since)
        if newest is None:
            return
        terms = ([f"lastModifiedDateTime gt {odata_time(since)}"] if since else []) + [
            f"lastModifiedDateTime le {odata_time(newest)}"]
        params = {"$filter": " and ".join(terms), "$orderby": "lastModifiedDateTime,entryNumber",
                  "$expand": "dimensionSetLines"}
        slots, currency = self._slots(), str(self._setup_row().get("localCurrencyCode") or "")[:3]
        pages_total = max(1, math.ceil(count / PAGE_SIZE)) if count is not None else None
        last: tuple[dt.datetime, int] | None = None
        page = 0
        for items, _ in self.pages(NextLink(page_size=PAGE_SIZE), self._entries_path(), params):
            entries = []
            for raw in items:
                entry = self._entry(raw, slots, currency)
                key = (entry.modified_at, int(entry.entry_id))
                if last is not None and key <= last:
                    continue  # a page boundary's repeat: pages come in this key's order
                last = key
                entries.append(entry)
                number_max = max(number_max, int(entry.entry_id))
            page += 1
            if last is not None:
                after = last[0] if after is None else max(after, last[0])
            yield EntryPage(
                entries=entries, page=page, fetched=len(items),
                cursor={"modified_after": odata_time(after) if after else None, "entry_number_max": number_max},
                pages_total=max(pages_total or page, page),
            )

    def _first_sync(self, cursor: dict | None) -> Iterator[EntryPage]:
        """Every entry numbered up to the highest at the start, as ranges side by side (above)."""
        if cursor is None:
            modified_from, count = self._newest(None)
            if modified_from is None:
                return
            since, last, top = odata_time(modified_from), 0, self._highest_number()
        else:
            since, last, top = cursor["modified_after"], cursor["first_sync"]["entry_no"], cursor["first_sync"]["upto"]
            count = None
        slots, currency = self._slots(), str(self._setup_row().get("localCurrencyCode") or "")[:3]
        # Entries are numbered one after another, so the span is the count where BC gave none.
        ranges = split(last, top, top - last if count is None else count, PAGE_SIZE)
        yield from self.ranged_pages(
            lambda key_range: self._entries_in(key_range, slots, currency), ranges, last, "entryNumber",
            lambda n: {"modified_after": since, "first_sync": {"entry_no": n, "upto": top}}, len(ranges) + 1)
        # Done: from now on the changes since T0, the last range's page joined by this empty one.
        yield EntryPage([], {"modified_after": since, "entry_number_max": top}, len(ranges) + 1, len(ranges) + 1)

    def _highest_number(self) -> int:
        body = self.get(self._entries_path(), {"$orderby": "entryNumber desc", "$top": "1", "$select": "entryNumber"})
        try:
            return whole_number(body["value"][0]["entryNumber"], "entryNumber")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self.bad_data(f"answered the question for its highest entry number with something else ({exc}).") from None

    def _entries_in(self, key_range: KeyRange, slots: dict[str, int], currency: str) -> list[Entry]:
        """One entryNumber range, every page of it, in entryNumber order."""
        params = {"$filter": f"entryNumber gt {key_range.after} and entryNumber le {key_range.upto}",
                  "$orderby": "entryNumber", "$expand": "dimensionSetLines"}
        pages = (items for items, _ in self.pages(NextLink(page_size=PAGE_SIZE), self._entries_path(), params))
        return self.entries_of_pages(pages, lambda raw: self._entry(raw, slots, currency), key_range.after,
                                     "entryNumber")

    def _newest(self, since: dt.datetime | None) -> tuple[dt.datetime | None, int | None]:
        """The newest lastModifiedDateTime after `since`, and how many entries are after `since`."""
        params = {"$orderby": "lastModifiedDateTime desc", "$top": "1", "$count": "true"}
        if since is not None:
            params["$filter"] = f"lastModifiedDateTime gt {odata_time(since)}"
        body = self.get(self._entries_path(), params)
        try:
            rows = body["value"]
            count = body.get("@odata.count")
            newest = parse_time(rows[0]["lastModifiedDateTime"]) if rows else None
            return newest, (whole_number(count, "@odata.count") if count is not None else None)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self.bad_data(f"answered the question for its newest entry with something else ({exc}).") from None

    def _entry(self, raw: Any, slots: dict[str, int], currency: str) -> Entry:
        if not isinstance(raw, dict):
            raise self.bad_data(f"sent an entry that is not a JSON object ({str(raw)[:40]}).")
        number = str(raw.get("entryNumber", "?"))[:20]
        try:
            debit, credit = money(raw["debitAmount"]), money(raw["creditAmount"])
            if debit < 0 or credit < 0:
                raise ValueError("a debit or credit amount is negative")
            dimensions = ["", "", ""]
            for line in raw["dimensionSetLines"]:
                slot = slots.get(str(line["code"]))
                if slot:
                    dimensions[slot - 1] = str(line["valueCode"])
            amount = debit - credit
            return Entry(
                entry_id=str(whole_number(raw["entryNumber"], "entryNumber")),
                account_number=str(raw["accountNumber"]),
                posting_date=dt.date.fromisoformat(raw["postingDate"]),
                amount=amount, currency=currency, amount_in_currency=amount,  # local currency (LCY)
                voucher=str(raw.get("documentNumber") or ""),
                text=str(raw.get("description") or "")[:255],
                entry_type=decoded(raw.get("documentType"))[:32],
                dimension_1=dimensions[0], dimension_2=dimensions[1], dimension_3=dimensions[2],
                modified_at=parse_time(raw["lastModifiedDateTime"]),
            )
        except KeyError as exc:
            raise self.bad_data(f"sent entry {number} without the field {exc}.") from None
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise self.bad_data(f"sent entry {number} with a value that is not valid: {exc}") from None

    def count_entries(self, cursor: dict) -> int:
        """Posted entries numbered up to the highest loaded: BC never deletes a G/L entry, and one
        numbered lower was posted before it, so the warehouse holds every one of them [?]."""
        number_max = int(cursor.get("entry_number_max") or cursor.get("first_sync", {}).get("entry_no", 0))
        body = self.get(self._entries_path() + "/$count", {"$filter": f"entryNumber le {number_max}"})
        try:
            return whole_number(body, "$count")
        except ValueError as exc:
            raise self.bad_data(f"answered the count of its entries with {exc}.") from None

    def check_access(self) -> None:
        self._company_path()

    # ---------------------------------------------------------------- for the checks
    def draft_lines(self) -> Iterator[DraftLine]:
        """Unposted journal lines, each G/L side of them: a line posts to its account and, where it
        has one, the opposite amount to its balancing account."""
        for journal in self._all(self._company_path() + "/journals"):
            try:
                path = f"{self._company_path()}/journals({_guid(journal.get('id'), 'journal')})/journalLines"
            except ValueError as exc:
                raise self.bad_data(f"sent {exc}.") from None
            for raw in self._all(path):
                try:
                    day, amount = dt.date.fromisoformat(raw["postingDate"]), money(raw["amount"])
                    sides = [(raw.get("accountType"), raw.get("accountNumber"), amount),
                             (raw.get("balanceAccountType"), raw.get("balancingAccountNumber"), -amount)]
                except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
                    raise self.bad_data(f"sent a journal line that is not valid ({exc}).") from None
                for kind, account, value in sides:
                    if account and decoded(kind) == "G/L Account":
                        yield DraftLine(voucher=str(raw.get("documentNumber") or ""), account_number=str(account),
                                        posting_date=day, amount=value)

    def fiscal_years(self) -> list[tuple[dt.date, dt.date]]:
        """The fiscal years (first day, last day) of `/accountingPeriods`: a year starts at a period
        with newFiscalYear and ends the day before the next one; the last ends a month after its
        last period starts [?: periods are months, as BC's own setup makes them]."""
        starts = sorted((dt.date.fromisoformat(p["startingDate"]), bool(p.get("newFiscalYear")))
                        for p in self._all(self._company_path() + "/accountingPeriods"))
        firsts = [day for day, new in starts if new]
        years = [(a, b - dt.timedelta(days=1)) for a, b in zip(firsts, firsts[1:])]
        if firsts:
            last = starts[-1][0]
            following = dt.date(last.year + last.month // 12, last.month % 12 + 1, 1)
            years.append((firsts[-1], following - dt.timedelta(days=1)))
        return years

    def period_totals(self) -> Iterator[PeriodTotal]:
        for start, end in self.fiscal_years():
            label = str(start.year) if (start.month, start.day) == (1, 1) else f"{start.year}/{end.year}"
            params = {"$filter": f"dateFilter ge {start.isoformat()} and dateFilter le {end.isoformat()}"}
            for raw in self._all(self._company_path() + "/accounts", params):
                if decoded(raw.get("accountType")) != "Posting":
                    continue  # a total's net change is its accounts' again
                yield PeriodTotal(label=label, account_number=str(raw["number"]), from_date=start, to_date=end,
                                  total=money(raw["netChange"]))


__all__ = ["BusinessCentralConnector", "BusinessCentralSettings"]
