"""Visma e-conomic, through its legacy REST API (https://restapi.e-conomic.com).

Auth: the app's secret token plus the tenant's agreement grant token ("access ID") as headers.
Paging: `nextPage` links at 1000 rows a page. Incremental: posted entries are immutable and carry an
agreement-wide increasing `entryNumber`, so the cursor is, per accounting year, the highest entry
number loaded from that year. Every year is asked each time, because a new entry can be booked
into an earlier year that is still open. Pages are asked sorted by entry number, so the highest
number on a page is a safe place to resume.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

import requests
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from b123_pipelines.connectors.base import (
    Account,
    Connector,
    DimensionValue,
    DraftLine,
    Entry,
    EntryPage,
    PeriodTotal,
)
from b123_pipelines.connectors.http import HttpTuning, session
from b123_pipelines.errors import (
    AccessDenied,
    BadSourceData,
    CredentialsRejected,
    SourceUnavailable,
)

PAGE_SIZE = 1000
ORE = Decimal("0.01")

NEW_ACCESS_ID = (
    "A new access ID is needed: in budget123 choose Global settings >> Integration settings and "
    "click \"Fetch new token automatically\" (in e-conomic the connection is under All settings >> "
    "Extensions >> Apps)."
)


class EconomicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://restapi.e-conomic.com"
    app_secret_token: SecretStr
    grant_token: SecretStr

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https://")
        return value.rstrip("/")


def year_in_url(year: str) -> str:
    # e-conomic writes the '/' of a broken year key ("2023/2024") as '_6_' in URLs.
    return year.replace("/", "_6_")


class EconomicConnector(Connector):
    system = "economic"
    Settings = EconomicSettings

    def __post_init__(self):
        self._http = session(
            HttpTuning.from_dict(self.http),
            {
                "X-AppSecretToken": self.settings.app_secret_token.get_secret_value(),
                "X-AgreementGrantToken": self.settings.grant_token.get_secret_value(),
                "Content-Type": "application/json",
            },
        )
        self._timeout = HttpTuning.from_dict(self.http).timeout

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ transport
    def _get(self, url: str, params: dict | None = None) -> dict:
        if not url.startswith("http"):
            url = self.settings.base_url + url
        try:
            response = self._http.get(url, params=params, timeout=self._timeout)
        except requests.RequestException as exc:
            raise self._unavailable(f"could not be reached ({type(exc).__name__}).") from None
        if response.status_code >= 400:
            raise self._http_error(response)
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise self._bad(f"answered {_path(url)} with a response that is not valid JSON.") from None

    def _pages(self, path: str, params: dict | None = None) -> Iterator[tuple[list, dict]]:
        """Follows `nextPage` from the first page to the last, yielding (collection, pagination)."""
        url, query = path, {"pagesize": PAGE_SIZE, **(params or {})}
        while url:
            body = self._get(url, query)
            try:
                collection, pagination = body["collection"], body.get("pagination", {})
            except (KeyError, TypeError):
                raise self._bad(f"answered {_path(url)} without a 'collection'.") from None
            yield collection, pagination
            url, query = pagination.get("nextPage"), None  # nextPage carries the query already

    def _all(self, path: str, params: dict | None = None) -> Iterator[dict]:
        for collection, _ in self._pages(path, params):
            yield from collection

    def _count(self, path: str, filter_: str | None) -> int:
        params = {"pagesize": 1, **({"filter": filter_} if filter_ else {})}
        pagination = self._get(path, params).get("pagination", {})
        return int(pagination.get("results", 0))

    # ------------------------------------------------------------------ errors
    def _http_error(self, response: requests.Response) -> Exception:
        status, path = response.status_code, _path(response.url)
        try:
            detail = response.json().get("message", "")
        except ValueError:
            detail = ""
        if status == 401:
            return CredentialsRejected(
                self.tenant_id, self.system,
                "e-conomic no longer accepts budget123's access ID (agreement grant token): the grant "
                "has been revoked, usually because the user or administrator who connected e-conomic "
                "and budget123 no longer has access to the books.",
                NEW_ACCESS_ID,
            )
        if status == 403:
            return AccessDenied(
                self.tenant_id, self.system,
                f"e-conomic refused access to {path}: the budget123 app's role in this agreement "
                "does not give access to it.",
                "An administrator in e-conomic must grant the app access (All settings >> Extensions "
                ">> Apps); then update again.",
            )
        if status == 429:
            return self._unavailable(
                "kept refusing calls because the agreement's API call limit was reached, even after "
                "waiting as e-conomic asked."
            )
        if status >= 500:
            return self._unavailable(f"answered HTTP {status} on {path}, even after retries.")
        return self._bad(f"rejected the request for {path} (HTTP {status}: {detail or 'no detail'}).")

    def _unavailable(self, problem: str) -> SourceUnavailable:
        return SourceUnavailable(
            self.tenant_id, self.system, f"e-conomic {problem}",
            "This is usually temporary: update again in a few minutes.",
        )

    def _bad(self, problem: str) -> BadSourceData:
        return BadSourceData(
            self.tenant_id, self.system, f"e-conomic {problem}",
            "Nothing from it was loaded. Update again; if it persists, the data team must look at "
            "this tenant's data in e-conomic.",
        )

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
                raise self._bad(f"sent an account without {exc}.") from None

    def dimension_values(self) -> Iterator[DimensionValue]:
        for raw in self._all("/departments"):
            yield DimensionValue(
                "department", str(raw["departmentNumber"]), str(raw.get("name", "")),
                blocked=bool(raw.get("barred", False)),
            )
        # Entries point at a departmental distribution, never at a department directly.
        for raw in self._all("/departmental-distributions"):
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
        return [str(raw["year"]) for raw in self._all("/accounting-years")]

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        last = dict((cursor or {}).get("years", {}))
        years = self._years()
        pending = {y: self._count(_entries(y), _after(last.get(y, 0))) for y in years}
        pages_total = sum(math.ceil(n / PAGE_SIZE) for n in pending.values())
        page = 0
        for year in years:
            if not pending[year]:
                continue
            params = {"filter": _after(last.get(year, 0)), "sort": "entryNumber"}
            for collection, _ in self._pages(_entries(year), params):
                entries = []
                for raw in collection:
                    entry = self._entry(raw)
                    # A line booked while we page can push an entry we already have onto the
                    # next page; entry numbers only grow, so anything not above the last is a repeat.
                    if int(entry.entry_id) <= last.get(year, 0):
                        continue
                    last[year] = int(entry.entry_id)
                    entries.append(entry)
                page += 1
                yield EntryPage(
                    entries=entries, cursor={"years": dict(last)}, page=page,
                    pages_total=max(pages_total, page), fetched=len(collection),
                )

    def _entry(self, raw: dict[str, Any]) -> Entry:
        number = raw.get("entryNumber", "?")
        try:
            distribution = raw.get("departmentalDistribution") or {}
            return Entry(
                entry_id=str(int(raw["entryNumber"])),
                account_number=str(raw["account"]["accountNumber"]),
                posting_date=dt.date.fromisoformat(raw["date"]),
                amount=_money(raw["amountInBaseCurrency"]),
                currency=str(raw.get("currency", "DKK")),
                amount_in_currency=_money(raw.get("amount", raw["amountInBaseCurrency"])),
                voucher=str(raw.get("voucherNumber", "")),
                text=str(raw.get("text", ""))[:255],
                entry_type=str(raw.get("entryType", "")),
                dimension_1=str(distribution.get("departmentalDistributionNumber", "")),
            )
        except KeyError as exc:
            raise self._bad(f"sent entry {number} without the field {exc}.") from None
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise self._bad(f"sent entry {number} with a value that is not valid: {exc}") from None

    def count_entries(self, cursor: dict) -> int:
        return sum(
            self._count(_entries(year), f"entryNumber$lte:{int(last)}")
            for year, last in (cursor or {}).get("years", {}).items()
        )

    def check_access(self) -> None:
        self._get("/self")

    # ------------------------------------------------------------------ for the checks
    def draft_lines(self) -> Iterator[DraftLine]:
        for journal in self._all("/journals"):
            for raw in self._all(f"/journals/{int(journal['journalNumber'])}/entries"):
                yield DraftLine(
                    voucher=str((raw.get("voucher") or {}).get("voucherNumber", "")),
                    account_number=str(raw["account"]["accountNumber"]),
                    posting_date=dt.date.fromisoformat(raw["date"]),
                    amount=_money(raw.get("amountBaseCurrency", raw.get("amount"))),
                )

    def period_totals(self) -> Iterator[PeriodTotal]:
        for year in self._years():
            for raw in self._all(f"/accounting-years/{year_in_url(year)}/totals"):
                yield PeriodTotal(
                    label=year,
                    account_number=str(raw["account"]["accountNumber"]),
                    from_date=dt.date.fromisoformat(raw["fromDate"]),
                    to_date=dt.date.fromisoformat(raw["toDate"]),
                    total=_money(raw["totalInBaseCurrency"]),
                )


def _entries(year: str) -> str:
    return f"/accounting-years/{year_in_url(year)}/entries"


def _after(entry_number: int) -> str:
    return f"entryNumber$gt:{int(entry_number)}"


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def _money(value: Any) -> Decimal:
    """An amount from the API, exactly: JSON numbers arrive as Decimal, never through float."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise ValueError(f"amount {value!r} is not a number")
    amount = value.quantize(ORE) if isinstance(value, Decimal) else Decimal(value).quantize(ORE)
    if amount != value:
        raise ValueError(f"amount {value} has more than two decimals")
    return amount


__all__ = ["EconomicConnector", "EconomicSettings"]
