"""What every accounting-system connector provides, and the records it yields.

A connector reads one tenant's books. The sync engine never sees HTTP, paging or auth: it asks for
the chart of accounts, the dimension values, and posted entries after an opaque cursor, page by
page, and stores each page together with the cursor that covers it.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Iterator

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Account:
    number: str
    name: str
    account_type: str
    blocked: bool = False


@dataclass(frozen=True)
class DimensionValue:
    dimension: str
    code: str
    name: str
    slot: int | None = None  # transactions column dimension_<slot> that carries this code
    allocation: tuple | None = None  # ((other_code, percentage), ...) for split values
    blocked: bool = False


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a million calls a sync
class Entry:
    """One posted ledger line (postering)."""

    entry_id: str
    account_number: str
    posting_date: dt.date
    amount: Decimal  # base currency; debit positive, credit negative
    currency: str
    amount_in_currency: Decimal
    voucher: str = ""
    text: str = ""
    entry_type: str = ""
    dimension_1: str = ""
    dimension_2: str = ""
    dimension_3: str = ""


@dataclass(frozen=True)
class DraftLine:
    """A line still lying in a draft journal (kassekladde): not a figure, only used to prove so."""

    voucher: str
    account_number: str
    posting_date: dt.date
    amount: Decimal


@dataclass
class EntryPage:
    entries: list[Entry]
    cursor: dict[str, Any]  # state after this page: resume here if the sync stops
    page: int  # 1-based, across the whole fetch
    pages_total: int | None
    fetched: int = 0  # lines received from the source, before dropping repeats


@dataclass(frozen=True)
class PeriodTotal:
    """The source's own total for an account over a date range, for reconciliation."""

    label: str  # e.g. the accounting year
    account_number: str
    from_date: dt.date
    to_date: dt.date
    total: Decimal


@dataclass
class Connector(abc.ABC):
    """One tenant's connection to one accounting system."""

    tenant_id: str
    settings: BaseModel
    http: dict = field(default_factory=dict)  # transport tuning: timeouts, retries, backoff

    system: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]
    cloud: ClassVar[bool] = True

    def __post_init__(self) -> None:
        """Subclasses open their transport here."""

    @classmethod
    def parse_connection(cls, tenant_id: str, raw: dict) -> BaseModel:
        """Validate a tenant's connection JSON, or raise ConfigurationError saying what is wrong."""
        from b123_pipelines.errors import ConfigurationError

        try:
            return cls.Settings.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'connection'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(
                tenant_id, cls.system, f"the connection settings are not valid ({problems}).",
                "Correct them with 'b123 tenant credentials'.",
            ) from None

    @classmethod
    def secret_fields(cls) -> list[str]:
        from pydantic import SecretStr

        return [n for n, f in cls.Settings.model_fields.items() if f.annotation is SecretStr]

    def secrets(self) -> list[str]:
        return [getattr(self.settings, n).get_secret_value() for n in self.secret_fields()]

    @abc.abstractmethod
    def accounts(self) -> Iterator[Account]: ...

    @abc.abstractmethod
    def dimension_values(self) -> Iterator[DimensionValue]: ...

    @abc.abstractmethod
    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        """Posted entries after `cursor` (None: from the beginning), oldest first, page by page."""

    @abc.abstractmethod
    def count_entries(self, cursor: dict) -> int:
        """How many posted entries the source holds up to `cursor`, by its own count."""

    @abc.abstractmethod
    def draft_lines(self) -> Iterator[DraftLine]: ...

    @abc.abstractmethod
    def period_totals(self) -> Iterator[PeriodTotal]: ...

    def check_access(self) -> None:
        """Raises the system's SyncError when the stored credentials no longer work."""
        next(iter(self.accounts()), None)

    def close(self) -> None:
        pass
