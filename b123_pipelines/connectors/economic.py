"""Visma e-conomic, through its legacy REST API (https://restapi.e-conomic.com).

Auth: the app's secret token plus the tenant's agreement grant token ("access ID") as headers.
Paging: `nextPage` links at 1000 rows a page. Incremental: posted entries are immutable and carry an
agreement-wide increasing `entryNumber`, so the cursor is, per accounting year, the highest entry
number loaded from that year. Every year is asked each time, because a new entry can be booked
into an earlier year that is still open. Pages are asked sorted by entry number, so the highest
number on a page is a safe place to resume. Up to the highest number at the start, each year is
read as entry-number ranges fetched side by side and handed on in order (kit/ranges.py).
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

import msgspec
from pydantic import BaseModel, ConfigDict

from b123_pipelines.connectors.base import (
    Account, Capabilities, Connector, DimensionValue, DraftLine, Entry, EntryPage, HttpsUrl, PeriodTotal,
    SecretText, money, whole_number,
)
from b123_pipelines.connectors.kit.auth import HeaderAuth
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import NextLink
from b123_pipelines.connectors.kit.ranges import KeyRange, in_order, split
from b123_pipelines.connectors.kit.transport import HttpStatusError, typed
from b123_pipelines.errors import AccessDenied, CredentialsRejected, SyncError

PAGE_SIZE = 1000

NEW_ACCESS_ID = (
    "A new access ID is needed: in budget123 choose Global settings >> Integration settings and "
    "click \"Fetch new token automatically\" (in e-conomic the connection is under All settings >> "
    "Extensions >> Apps)."
)


INSTALLATION_URL = "https://secure.e-conomic.com/secure/api1/requestaccess.aspx"


class EconomicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: HttpsUrl = "https://restapi.e-conomic.com"
    app_secret_token: SecretText
    grant_token: SecretText
    # Where "Fetch new token automatically" sends the user to approve a new grant (regrant.py).
    installation_url: HttpsUrl = INSTALLATION_URL
    # The agreement the grant belongs to (/self's agreementNumber), recorded when first seen: a new
    # grant for another agreement (another company's books) is refused.
    agreement_number: int | None = None


# A page of posted entries as e-conomic sends it, read straight into these (kit/transport.typed).
class _Number(msgspec.Struct):
    accountNumber: int | str


class _Distribution(msgspec.Struct):
    departmentalDistributionNumber: int | str


class _PostedEntry(msgspec.Struct):
    entryNumber: int
    account: _Number
    date: dt.date
    # Amounts as their JSON text, read by `_amount`: a JSON number only (msgspec's Decimal would also
    # take a numeric string, which the plain path refuses).
    amountInBaseCurrency: msgspec.Raw
    amount: msgspec.Raw = msgspec.Raw(b"")  # absent: the base currency's amount
    currency: str = "DKK"
    voucherNumber: int | str = ""
    text: str = ""
    entryType: str = ""
    departmentalDistribution: _Distribution | None = None


class _EntriesPage(msgspec.Struct):
    collection: list[_PostedEntry]
    pagination: dict = {}


ENTRIES_PAGE = typed(_EntriesPage)


def _amount(raw: msgspec.Raw) -> Decimal:
    text = bytes(raw).decode()
    if not text or text[0] not in "-0123456789":
        raise ValueError(f"amount {text[:40]} is not a number")
    return money(Decimal(text))


def year_in_url(year: str) -> str:
    # e-conomic writes the '/' of a broken year key ("2023/2024") as '_6_' in URLs.
    return year.replace("/", "_6_")


def _next_page(body: dict) -> str | None:
    return (body.get("pagination") or {}).get("nextPage")


def _results(body: dict) -> int | None:
    return (body.get("pagination") or {}).get("results")


class EconomicConnector(Connector):
    system = "economic"
    label = "e-conomic"
    Settings = EconomicSettings
    # Fair use 50,000 calls a day and a bucket of 10,000 a minute, per agreement (= per tenant).
    # No limit on calls at once is published; 8 keeps a first sync's pages flowing (at ~250 ms a
    # page, 32 calls a second, a fifth of the bucket).
    budget = ApiBudget(calls_per_window=10_000, window_seconds=60, concurrent_calls=8, calls_per_day=50_000)
    capabilities = Capabilities(draft_lines=True, source_totals=True, source_count=True)
    _known_years: list[str] | None = None

    def base_url(self) -> str:
        return self.settings.base_url

    def auth(self) -> HeaderAuth:
        return HeaderAuth({"X-AppSecretToken": self.settings.app_secret_token,
                           "X-AgreementGrantToken": self.settings.grant_token})

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def explain(self, error: HttpStatusError) -> SyncError | None:
        if error.status == 401:
            return CredentialsRejected(
                self.tenant_id, self.system,
                "e-conomic no longer accepts budget123's access ID (agreement grant token): the grant "
                "has been revoked, usually because the user or administrator who connected e-conomic "
                "and budget123 no longer has access to the books.",
                NEW_ACCESS_ID,
            )
        if error.status == 403:
            return AccessDenied(
                self.tenant_id, self.system,
                f"e-conomic refused access to {error.path}: the budget123 app's role in this agreement "
                "does not give access to it.",
                "An administrator in e-conomic must grant the app access (All settings >> Extensions "
                ">> Apps); then update again.",
            )
        if error.status == 429:
            return self.unavailable(
                "kept refusing calls because the agreement's API call limit was reached, even after "
                "waiting as e-conomic asked."
            )
        return None

    def _paginator(self) -> NextLink:
        return NextLink(items_key="collection", link=_next_page, total=_results, page_size=PAGE_SIZE)

    def _all(self, path: str, params: dict | None = None) -> Iterator[dict]:
        return self.records(self._paginator(), path, {"pagesize": PAGE_SIZE, **(params or {})})

    def _count(self, path: str, filter_: str | None) -> int:
        params = {"pagesize": 1, **({"filter": filter_} if filter_ else {})}
        return int(_results(self.get(path, params)) or 0)

    # ------------------------------------------------------------------ chart of accounts, dimensions
    def accounts(self) -> Iterator[Account]:
        for raw in self._all("/accounts"):
            try:
                yield Account(
                    number=str(raw["accountNumber"]),
                    name=str(raw.get("name", "")),
                    account_type=str(raw["accountType"]),
                    blocked=bool(raw.get("barred", False)),
                )
            except KeyError as exc:
                raise self.bad_data(f"sent an account without {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        departments, distributions = self.side_by_side(
            lambda path: list(self._all(path)), ["/departments", "/departmental-distributions"])
        for raw in departments:
            yield DimensionValue(
                "department", str(raw["departmentNumber"]), str(raw.get("name", "")),
                blocked=bool(raw.get("barred", False)),
            )
        # Entries point at a departmental distribution, never at a department directly.
        for raw in distributions:
            allocation = tuple(
                (str(part["department"]["departmentNumber"]), str(part["percentage"]))
                for part in raw.get("distributions", [])
            )
            yield DimensionValue(
                "distribution", str(raw["departmentalDistributionNumber"]), str(raw.get("name", "")),
                slot=1, allocation=allocation, blocked=bool(raw.get("barred", False)),
            )

    # ------------------------------------------------------------------ posted entries
    def _years(self) -> list[str]:
        # Asked once an update: the entries, the counts and the totals all go by year.
        if self._known_years is None:
            self._known_years = [str(raw["year"]) for raw in self._all("/accounting-years")]
        return self._known_years

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        last = {year: int(n) for year, n in (cursor or {}).get("years", {}).items()}
        years = self._years()
        pending = self.side_by_side(lambda year: self._pending(year, last.get(year, 0)), years)
        ranges = [(year, key_range) for year, (count, first, top) in zip(years, pending)
                  for key_range in split(first - 1, top, count, PAGE_SIZE)]
        with closing(in_order(self._entries_in, ranges, self.at_once)) as fetched:
            for page, ((year, _), received) in enumerate(fetched, 1):
                entries, last[year] = self.after_cursor(received, last.get(year, 0), "entryNumber")
                yield EntryPage(entries=entries, cursor={"years": dict(last)}, page=page,
                                pages_total=max(len(ranges), page), fetched=len(received))

    def _pending(self, year: str, after: int) -> tuple[int, int, int]:
        """How many entries the year has after `after`, and the lowest and highest entry number
        among them: the oldest and the newest entry, asked side by side. A year's numbers lie
        between other years' (numbers are agreement-wide), so the ranges start at its own lowest.
        Entries booked later get higher numbers: the ranges up to the highest hold the same
        entries however long the fetch takes."""
        oldest, newest = self.side_by_side(lambda order: self.get(_entries(year), {
            "pagesize": 1, "filter": _after(after), "sort": order}), ["entryNumber", "-entryNumber"])
        first, top = (self._first(body) for body in (oldest, newest))
        if first is None or top is None:
            return 0, after + 1, after
        return int(_results(newest) or 0), first, top

    def _first(self, body: Any) -> int | None:
        """The entry number of a one-entry page's entry, or None for an empty page."""
        entry = (body.get("collection") or [None])[0] if isinstance(body, dict) else None
        return None if entry is None else int(self._entry(entry).entry_id)

    def _entries_in(self, year_range: tuple[str, KeyRange]) -> list[Entry]:
        """One key range of a year, every page of it (a range holds more than a page where entry
        numbers are bunched), in entry-number order. Read into entries as it arrives: the JSON of
        the ranges waiting their turn would be several times their size."""
        year, key_range = year_range
        params = {"pagesize": PAGE_SIZE, "sort": "entryNumber",
                  "filter": f"{_after(key_range.after)}$and:entryNumber$lte:{key_range.upto}"}
        return [self._posted(raw) if type(raw) is _PostedEntry else self._entry(raw)
                for raw in self.records(self._paginator(), _entries(year), params, ENTRIES_PAGE)]

    def _posted(self, raw: _PostedEntry) -> Entry:
        """An entry read typed from the bytes: only the amounts are left to check."""
        try:
            amount = _amount(raw.amountInBaseCurrency)
            in_currency = amount if not raw.amount else _amount(raw.amount)
        except (InvalidOperation, ValueError) as exc:
            raise self.bad_data(f"sent entry {raw.entryNumber} with a value that is not valid: {exc}") from None
        distribution = raw.departmentalDistribution
        return Entry(
            entry_id=str(raw.entryNumber), account_number=str(raw.account.accountNumber),
            posting_date=raw.date, amount=amount, currency=raw.currency, amount_in_currency=in_currency,
            voucher=str(raw.voucherNumber), text=raw.text[:255], entry_type=raw.entryType,
            dimension_1="" if distribution is None else str(distribution.departmentalDistributionNumber),
        )

    def _entry(self, raw: dict[str, Any]) -> Entry:
        if not isinstance(raw, dict):
            raise self.bad_data(f"sent an entry that is not a JSON object ({str(raw)[:40]}).")
        number = raw.get("entryNumber", "?")
        try:
            distribution = raw.get("departmentalDistribution") or {}
            return Entry(
                entry_id=str(whole_number(raw["entryNumber"], "entryNumber")),
                account_number=str(raw["account"]["accountNumber"]),
                posting_date=dt.date.fromisoformat(raw["date"]),
                amount=money(raw["amountInBaseCurrency"]),
                currency=str(raw.get("currency", "DKK")),
                amount_in_currency=money(raw.get("amount", raw["amountInBaseCurrency"])),
                voucher=str(raw.get("voucherNumber", "")),
                text=str(raw.get("text", ""))[:255],
                entry_type=str(raw.get("entryType", "")),
                dimension_1=str(distribution.get("departmentalDistributionNumber", "")),
            )
        except KeyError as exc:
            raise self.bad_data(f"sent entry {number} without the field {exc}.") from None
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise self.bad_data(f"sent entry {number} with a value that is not valid: {exc}") from None

    def count_entries(self, cursor: dict) -> int:
        years = (cursor or {}).get("years", {})
        return sum(self.side_by_side(
            lambda year: self._count(_entries(year), f"entryNumber$lte:{int(years[year])}"), list(years)))

    def check_access(self) -> None:
        self.get("/self")

    def agreement_number(self) -> int | None:
        """The agreement the grant is for, by e-conomic's /self."""
        body = self.get("/self")
        number = body.get("agreementNumber") if isinstance(body, dict) else None
        return number if type(number) is int else None

    def learned_settings(self) -> dict:
        # Recorded once, so "Fetch new token automatically" can refuse a grant for other books.
        if self.settings.agreement_number is not None:
            return {}
        number = self.agreement_number()
        return {} if number is None else {"agreement_number": number}

    # ------------------------------------------------------------------ for the checks
    def draft_lines(self) -> Iterator[DraftLine]:
        journals = [int(journal["journalNumber"]) for journal in self._all("/journals")]
        for lines in self.side_by_side(lambda number: list(self._all(f"/journals/{number}/entries")), journals):
            for raw in lines:
                yield DraftLine(
                    voucher=str((raw.get("voucher") or {}).get("voucherNumber", "")),
                    account_number=str(raw["account"]["accountNumber"]),
                    posting_date=dt.date.fromisoformat(raw["date"]),
                    amount=money(raw.get("amountBaseCurrency", raw.get("amount"))),
                )

    def period_totals(self) -> Iterator[PeriodTotal]:
        years = self._years()
        totals = self.side_by_side(lambda year: list(self._all(f"/accounting-years/{year_in_url(year)}/totals")), years)
        for year, rows in zip(years, totals):
            for raw in rows:
                yield PeriodTotal(
                    label=year,
                    account_number=str(raw["account"]["accountNumber"]),
                    from_date=dt.date.fromisoformat(raw["fromDate"]),
                    to_date=dt.date.fromisoformat(raw["toDate"]),
                    total=money(raw["totalInBaseCurrency"]),
                )


def _entries(year: str) -> str:
    return f"/accounting-years/{year_in_url(year)}/entries"


def _after(entry_number: int) -> str:
    return f"entryNumber$gt:{int(entry_number)}"


__all__ = ["EconomicConnector", "EconomicSettings"]
