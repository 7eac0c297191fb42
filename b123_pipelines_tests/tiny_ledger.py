"""A small OData-shaped accounting system, to show the connector kit: the whole connector is below.

Accounts page by `@odata.nextLink`, posted entries by keyset (`Entry_No gt last`), HTTP Basic.
It declares no draft journals, totals or count, so only the checks that need none are attached.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

from pydantic import BaseModel, ConfigDict, SecretStr

from b123_pipelines.connectors.base import (
    Account,
    Capabilities,
    Connector,
    DimensionValue,
    Entry,
    EntryPage,
    HttpsUrl,
    money,
    whole_number,
)
from b123_pipelines.connectors.kit.auth import BasicAuth
from b123_pipelines.connectors.kit.budget import ApiBudget
from b123_pipelines.connectors.kit.paginators import Keyset, NextLink

PAGE_SIZE = 50


class TinyLedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: HttpsUrl
    username: str
    password: SecretStr


class TinyLedgerConnector(Connector):
    system = "tiny_ledger"
    label = "Tiny Ledger"
    Settings = TinyLedgerSettings
    budget = ApiBudget(calls_per_window=600, window_seconds=60, concurrent_calls=2)
    capabilities = Capabilities()

    def base_url(self) -> str:
        return self.settings.base_url

    def auth(self) -> BasicAuth:
        return BasicAuth(self.settings.username, self.settings.password)

    def accounts(self) -> Iterator[Account]:
        for raw in self.records(NextLink(), "/Accounts"):
            yield Account(str(raw["No"]), raw["Name"], raw["Account_Type"])

    def dimension_values(self) -> Iterator[DimensionValue]:
        for raw in self.records(NextLink(), "/Departments"):
            yield DimensionValue("DEPARTMENT", raw["Code"], raw["Name"], slot=1)

    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        last = (cursor or {}).get("entry_no")
        paginator = Keyset("Entry_No", page_size=PAGE_SIZE, after=last)
        for page, (items, _) in enumerate(self.pages(paginator, "/GLEntries"), start=1):
            entries = [self._entry(raw) for raw in items]
            last = int(entries[-1].entry_id) if entries else last
            yield EntryPage(entries, {"entry_no": last}, page, None, fetched=len(items))

    def _entry(self, raw: dict) -> Entry:
        amount = money(raw["Amount"])
        return Entry(str(whole_number(raw["Entry_No"], "Entry_No")), str(raw["G_L_Account_No"]),
                     dt.date.fromisoformat(raw["Posting_Date"]), amount, "DKK", amount,
                     voucher=raw["Document_No"], dimension_1=raw["Department_Code"] or "")
