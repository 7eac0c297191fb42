"""Uniconta, through its OData API (https://odata.uniconta.com).

Where: `{base_url}/odata/{company_id}/<Entity>`. Auth: HTTP Basic with the user's own password and
the user name written `00{company_id}/{username}` [doc]; the user needs rights in the company.

Incremental on what was posted last, not on the posting date. Uniconta lets a user post into an
earlier period that is still open, so a cursor on `Date` would miss a line posted today with last
month's date. Posted lines (`GLTransClient`) are read in RowId order, `$filter=RowId gt N&$orderby=
RowId&$top=1000`, and the cursor `{"row_id": N}` is the highest RowId stored so far. This rests on
an ASSUMPTION the vendor does not document [?]: every posted line carries a `RowId` that is unique
in the company and rises as lines are posted (a line posted later, whatever its date, has a higher
RowId than every line posted before it), and the `JournalPostedId` of the posting that made it.
A line on a page without a JournalPostedId is therefore not a posted line and stops the update.
Posted lines are taken not to change after posting (no `entries_change`) [?].

Calls are the scarce thing: Uniconta counts server calls per user per day (5,000 in the standard
package [doc]), and budget123's user may be a person's own. So an update spends as few as it can:
pages of 1,000 (the most the API serves [?]), no count call, the company record (`CompanyClient`,
whose `_Dim1`..`_Dim5` label the dimensions) read once per update, and only the dimensions in use
(a null `_DimN` is unused: its `GLDimTypeNClient` is never read). A first sync of N lines costs
about N/1,000 calls and six more (chart of accounts, company, three dimensions, the draft journal
for the draft_exclusion check), and at most two more where its lines are read side by side
(`entry_pages`); an update with nothing new costs those six and one empty page.
The kit counts every call an update spends (`sync_runs.api_calls`). When the day's calls are spent
Uniconta answers 429 with a Retry-After of hours: the update stops at once (the kit's transport
never waits more than two minutes), says that the daily call limit is spent and when it resets,
and keeps every page already stored; the next update resumes from the cursor.

Dimensions: `dimension_values.dimension` is the company's label of the dimension (`_Dim1`, ...).
Transactions have three dimension columns: Dimension1..3 go to slots 1..3; the values of
dimensions 4 and 5 are loaded with no slot (they are not on `transactions`).

Drafts: lines in daily journals (`GLDailyJournalLineClient`) are never figures; they are read only
for the draft_exclusion check, each G/L side (account, offset account) a `DraftLine`.

Choices the vendor does not document are marked [?].
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from dataclasses import dataclass
from decimal import InvalidOperation
from functools import cached_property
from typing import Annotated, Any, Iterator

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from b123_pipelines.connectors.base import (
    Account, Capabilities, Connector, DimensionValue, DraftLine, Entry, EntryPage, HttpsUrl, SecretText,
    error_detail, money, whole_number,
)
from b123_pipelines.connectors.kit.auth import BasicAuth
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import Keyset, NextLink
from b123_pipelines.connectors.kit.ranges import in_order
from b123_pipelines.connectors.kit.transport import HttpStatusError, TransportError, WaitTooLong
from b123_pipelines.errors import (
    AccessDenied, ConfigurationError, CredentialsRejected, SourceUnavailable, SyncError,
)

PAGE_SIZE = 1000  # the most Uniconta serves in one page [?]
DAILY_CALLS = 5000  # server calls per user per day in the standard package [doc]
SLOTS = 3  # transactions.dimension_1..3


def _user_name_alone(name: str) -> str:
    if "/" in name:
        raise ValueError("give the user name alone, without '00<company id>/': budget123 writes it so itself")
    return name


class UnicontaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: HttpsUrl = "https://odata.uniconta.com"
    company_id: int = Field(gt=0)
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1),
                        AfterValidator(_user_name_alone)]
    password: SecretText


@dataclass
class _RowIdKeyset(Keyset):
    """Keyset on RowId that also goes on after a short page that says more follow (a server whose
    page limit is below `$top` and that links to the rest [?]): the next page is still asked by
    RowId, never by the link, so each page is resumable from the cursor."""

    key: str = "RowId"
    page_size: int = PAGE_SIZE

    def next(self, request, body, items):
        if items and len(items) < self.page_size and isinstance(body, dict) and body.get("@odata.nextLink"):
            return request[0], self._params(request[1], items[-1][self.key])
        return super().next(request, body, items)


class UnicontaConnector(Connector):
    system = "uniconta"
    label = "Uniconta"
    cloud = True
    Settings = UnicontaSettings
    # The day's 5,000 calls are what binds; Uniconta publishes no per-minute limit, so a polite one:
    # two calls at once (two windows of posted lines side by side, or a page stored while the next
    # is fetched), at most 5 a second. More at once would not spend fewer calls, only more of the
    # user's server at a time.
    budget = ApiBudget(calls_per_window=300, window_seconds=60, concurrent_calls=2, calls_per_day=DAILY_CALLS,
                       updates_at_once=4)
    capabilities = Capabilities(draft_lines=True)

    @property
    def login(self) -> str:
        return f"00{self.settings.company_id}/{self.settings.username}"

    def base_url(self) -> str:
        return f"{self.settings.base_url}/odata/{self.settings.company_id}"

    def auth(self) -> BasicAuth:
        return BasicAuth(self.login, self.settings.password)

    # ------------------------------------------------------------------ what went wrong, in Uniconta's words
    def explain(self, error: HttpStatusError) -> SyncError | None:
        detail = error_detail(error.body) or "no detail"
        company = self.settings.company_id
        if error.status == 401:
            return CredentialsRejected(
                self.tenant_id, self.system,
                f"Uniconta refused the user '{self.login}' with the stored password (HTTP 401: {detail}): the "
                "password is wrong or was changed.",
                "Store the user's current password for this tenant in budget123's integration settings "
                "(the user name is written 00<company id>/<user name> by budget123 itself).")
        if error.status == 403:
            return AccessDenied(
                self.tenant_id, self.system,
                f"Uniconta's user '{self.settings.username}' logged in, but has no rights in company {company} "
                f"(HTTP 403: {detail}).",
                "An administrator in Uniconta must give the user rights in the company; then update again.")
        if error.status == 404:
            return ConfigurationError(
                self.tenant_id, self.system,
                f"Uniconta has no company {company} that the user '{self.settings.username}' can reach "
                f"(HTTP 404 on {error.path}: {detail}).",
                "Correct company_id in the tenant's connection settings (Uniconta shows a company's id "
                "under its company information); then update again.")
        if error.status == 429:
            return self._daily_limit_spent(None, detail)
        return None

    def explain_transport(self, error: TransportError) -> SyncError | None:
        # The transport stops on a Retry-After of more than two minutes: for Uniconta a 429 that
        # long is the daily call limit, and the message should say so.
        if isinstance(error, WaitTooLong) and error.status == 429:
            return self._daily_limit_spent(error.until, None)
        return None

    def _daily_limit_spent(self, until: dt.datetime | None, detail: str | None) -> SyncError:
        when = (f"It resets at {until.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC" if until is not None
                else "Uniconta did not say when it resets (normally at midnight)")
        return SourceUnavailable(
            self.tenant_id, self.system,
            f"Uniconta refused further calls: the daily call limit of the user '{self.login}' is spent "
            f"(Uniconta counts server calls per user per day, {DAILY_CALLS:,} in the standard package)"
            + (f" (HTTP 429: {detail})" if detail else "") + ". The update stopped at once instead of waiting "
            "for the limit to reset; everything loaded before it was kept.",
            f"{when}; update again after that, and it resumes where this one stopped. If the limit is "
            "spent often, give budget123 a Uniconta user of its own or buy more calls from Uniconta.")

    # ------------------------------------------------------------------ the company and its small entities
    def _records(self, entity: str) -> Iterator[dict]:
        for raw in self.records(_RowIdKeyset(), f"/{entity}"):
            if not isinstance(raw, dict):
                raise self.bad_data(f"sent a record of {entity} that is not a JSON object ({str(raw)[:40]}).")
            try:
                whole_number(raw.get("RowId"), "RowId")  # the next page is asked after it
            except ValueError as exc:
                raise self.bad_data(f"sent a record of {entity} whose {exc}.") from None
            yield raw

    @cached_property
    def company(self) -> dict:
        """The company's record (CompanyClient), read once per update: its dimension labels and
        base currency."""
        records = self.get("/CompanyClient")
        records = records.get("value") if isinstance(records, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise self.bad_data("answered CompanyClient without its list of companies ('value').")
        ours = [r for r in records if r.get("CompanyId") == self.settings.company_id]
        if not ours and len(records) == 1 and "CompanyId" not in records[0]:
            ours = records  # [?] a record that does not say its id is the company of the URL
        if not ours:
            raise ConfigurationError(
                self.tenant_id, self.system,
                f"Uniconta did not list company {self.settings.company_id} for the user '{self.settings.username}'.",
                "Correct company_id in the tenant's connection settings; then update again.")
        return ours[0]

    def dimension_labels(self) -> dict[int, str]:
        """{n: label} of the dimensions in use (`_DimN` not null or blank), labels made unique."""
        labels: dict[int, str] = {}
        for n in range(1, 6):
            label = self.company.get(f"_Dim{n}")
            if label is None or not str(label).strip():
                continue
            label = str(label).strip()
            # Two dimensions with one label would share their values' keys: tell them apart.
            labels[n] = label if label not in labels.values() else f"{label} ({n})"
        return labels

    def check_access(self) -> None:
        self.company  # noqa: B018 - one call that needs the password, the rights and the company

    def accounts(self) -> Iterator[Account]:
        for raw in self._records("GLAccountClient"):
            try:
                yield Account(number=str(raw["Account"]), name=str(raw.get("Name") or ""),
                              account_type=str(raw.get("AccountType") or ""), blocked=bool(raw.get("Blocked")))
            except KeyError as exc:
                raise self.bad_data(f"sent an account without the field {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        for n, label in self.dimension_labels().items():
            for raw in self._records(f"GLDimType{n}Client"):
                try:
                    yield DimensionValue(label, str(raw["KeyStr"]), str(raw.get("Name") or ""),
                                         slot=n if n <= SLOTS else None, blocked=bool(raw.get("Blocked")))
                except KeyError as exc:
                    raise self.bad_data(f"sent a value of dimension '{label}' without the field {exc}.") from None

    # ------------------------------------------------------------------ posted lines
    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        """Posted lines after the cursor's RowId, in RowId order.

        Uniconta's binding limit is calls per day, so lines are read side by side only where that
        costs at most two calls more than one page after another would. The first page is asked by
        keyset as always: an update with less than a page of new lines (most of them) spends
        nothing more. Where it came full, one call asks the newest RowId, and the lines between
        are read as windows of `$skip` over that fixed set (`RowId gt A and RowId le B`, ordered by
        RowId): later lines get higher RowIds, so the set stays the same however long the fetch
        takes, unless a posted line in it is deleted [?]. So each window after the first starts
        with the previous window's last line: where it does not, the set moved, and the rest is
        read page by page by keyset from the cursor, as before, so no line is skipped. A window
        holds a page (one line of it the overlap), so windows cost about what pages by keyset
        would; reading stops at the first window that is not full or reaches the newest RowId,
        plus the one window asked while that one was on its way. Ranges of RowId would cost more:
        RowIds have gaps (other rows share the counter [?]), so ranges by width would hold part
        pages and cost a call each. Windows are handed on in order, each with its highest RowId as
        cursor: a sync killed anywhere resumes with no gap and no duplicate. No count is asked (it
        would cost a call), so the pages are not known."""
        last = int((cursor or {}).get("row_id", 0))
        base_currency = str(self.company.get("CurrencyId") or "")
        entry = lambda raw: self._entry(raw, base_currency)
        first = self._keyset_pages(last, entry)
        page, more = next(first, (None, False))
        first.close()
        if page is None:
            return
        yield page
        window = page.fetched  # what the server serves in one page, whatever $top asks
        if not page.entries or not more:
            return
        last, newest = page.cursor["row_id"], self._newest()
        where = f"RowId gt {last} and RowId le {newest}"

        def fetch(skip: int) -> list[Entry]:
            return [entry(raw) for items, _ in self.pages(NextLink(), "/GLTransClient", {
                "$filter": where, "$orderby": "RowId", "$skip": str(skip), "$top": str(window)}) for raw in items]

        previous, number = None, 2  # the last RowId of the window before; the next page's number
        windows = range(0, newest - last, max(1, window - 1))  # at most newest - last lines: RowIds are unique
        with closing(in_order(fetch, windows, self.at_once)) as fetched:
            for _, received in fetched:
                if previous is not None and (not received or int(received[0].entry_id) != previous):
                    break  # the set moved under the windows: the rest by keyset from the cursor
                previous = int(received[-1].entry_id) if received else previous
                entries, last = self.after_cursor(received, last, "RowId")
                yield EntryPage(entries, {"row_id": last}, number, None, fetched=len(received))
                number += 1
                if len(received) < window or last >= newest:
                    return
        for page, _ in self._keyset_pages(last, entry, number):
            yield page

    def _keyset_pages(self, last: int, entry, number: int = 1) -> Iterator[tuple[EntryPage, bool]]:
        """Pages by keyset after RowId `last`, numbered from `number`, each with whether more may follow."""
        for number, (items, body) in enumerate(self.pages(_RowIdKeyset(after=last or None), "/GLTransClient"), number):
            entries, last = self.after_cursor([entry(raw) for raw in items], last, "RowId")
            more = len(items) >= PAGE_SIZE or bool(isinstance(body, dict) and body.get("@odata.nextLink"))
            yield EntryPage(entries, {"row_id": last}, number, None, fetched=len(items)), more

    def _newest(self) -> int:
        """The highest RowId of the posted lines: one line, the newest first."""
        body = self.get("/GLTransClient", {"$orderby": "RowId desc", "$top": "1"})
        rows = body.get("value") if isinstance(body, dict) else None
        try:
            return whole_number(rows[0]["RowId"], "RowId")
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise self.bad_data(f"answered the question for its newest posted line with something else ({exc}).") from None

    def _entry(self, raw: Any, base_currency: str) -> Entry:
        if not isinstance(raw, dict):
            raise self.bad_data(f"sent a posted line that is not a JSON object ({str(raw)[:40]}).")
        row = raw.get("RowId", "?")
        try:
            row_id = whole_number(raw["RowId"], "RowId")
            if raw.get("JournalPostedId") is None:
                raise ValueError("it has no JournalPostedId, so it is not a posted line (a draft journal "
                                 "line?); nothing from this page was loaded")
            amount = money(raw["Amount"])
            if raw.get("Debit") is not None and raw.get("Credit") is not None and \
                    money(raw["Debit"]) - money(raw["Credit"]) != amount:
                raise ValueError(f"Amount {amount} is not Debit {raw['Debit']} less Credit {raw['Credit']}")
            currency = str(raw.get("Currency") or "")
            return Entry(
                entry_id=str(row_id), account_number=str(raw["Account"]), posting_date=_date(raw["Date"]),
                amount=amount, currency=currency or base_currency,
                amount_in_currency=money(raw["AmountCur"]) if currency and raw.get("AmountCur") is not None else amount,
                voucher=str(raw.get("Voucher") or ""), text=str(raw.get("Text") or "")[:255],
                dimension_1=str(raw.get("Dimension1") or ""), dimension_2=str(raw.get("Dimension2") or ""),
                dimension_3=str(raw.get("Dimension3") or ""),
            )
        except KeyError as exc:
            raise self.bad_data(f"sent posted line {row} without the field {exc}.") from None
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise self.bad_data(f"sent posted line {row} with a value that is not valid: {exc}.") from None

    # ------------------------------------------------------------------ for the checks
    def draft_lines(self) -> Iterator[DraftLine]:
        for raw in self._records("GLDailyJournalLineClient"):
            try:
                date, amount = _date(raw["Date"]), money(raw["Amount"])
                voucher = str(raw.get("Voucher") or "")
            except KeyError as exc:
                raise self.bad_data(f"sent a journal line without the field {exc}.") from None
            except (InvalidOperation, TypeError, ValueError) as exc:
                raise self.bad_data(f"sent a journal line with a value that is not valid: {exc}.") from None
            for kind, account, signed in (("AccountType", "Account", amount),
                                          ("OffsetAccountType", "OffsetAccount", -amount)):
                # [?] G/L accounts are AccountType "Finance"; a debtor's or creditor's side posts elsewhere.
                if raw.get(account) and str(raw.get(kind) or "Finance") == "Finance":
                    yield DraftLine(voucher, str(raw[account]), date, signed)


def _date(value: Any) -> dt.date:
    """A date as the API writes it, `2024-03-15T00:00:00` (or without the time) [?]."""
    if not isinstance(value, str):
        raise ValueError(f"date {value!r} is not text")
    return dt.date.fromisoformat(value[:10])


__all__ = ["UnicontaConnector", "UnicontaSettings"]
