"""What every accounting-system connector provides, the records it yields, and the facts it declares.

A connector reads one tenant's books. The sync engine never sees HTTP, paging or auth: it asks for
the chart of accounts, the dimension values, and posted entries after an opaque cursor, page by
page, and stores each page together with the cursor that covers it. A connector is composed from
the kit (`connectors/kit/`): a transport, an auth, paginators, the system's API budget; what is its
own is its mapping from the source's records to ours, and its cursor.
"""

from __future__ import annotations

import abc
import datetime as dt
import types
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Callable, ClassVar, Iterable, Iterator, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, SecretStr, ValidationError
from requests.auth import AuthBase

from b123_pipelines.connectors.findings import Finding, standard_findings
from b123_pipelines.connectors.kit.auth import TokenRefused, TokenStore
from b123_pipelines.connectors.kit.budget import DAILY_SHARE, ApiBudget, limiter_for
from b123_pipelines.connectors.kit.paginators import Paginator, pages
from b123_pipelines.connectors.kit.ranges import MOST_AT_ONCE, in_order
from b123_pipelines.connectors.kit.transport import (
    DailyCallsSpent, HttpStatusError, HttpTuning, Transport, TransportError, WaitTooLong, https_or_loopback,
)
from b123_pipelines.errors import (
    AccessDenied, BadSourceData, ConfigurationError, CredentialsRejected, SourceUnavailable, SyncError,
)


T = TypeVar("T")
R = TypeVar("R")

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
    modified_at: dt.datetime | None = None  # when the source last changed it (capability entries_change)


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


@dataclass(frozen=True)
class Capabilities:
    """What a system can tell beyond its records; each check is attached only where it has what it needs."""

    draft_lines: bool = False  # lists draft-journal lines: the draft_exclusion check
    source_totals: bool = False  # reports its own balances: the reconciliation check
    source_count: bool = False  # counts its posted entries: row_counts compares with the source
    entries_change: bool = False  # sends a posted entry again when it changes (Business Central)


@dataclass
class Connector(abc.ABC):
    """One tenant's connection to one accounting system, composed from the kit.

    A subclass declares the system's facts (the class variables), says where and how to connect
    (`base_url`, `auth`, `explain` for the statuses its API gives a meaning of its own) and maps the
    source's records to ours. The transport is opened here, once per connector.
    """

    tenant_id: str
    settings: BaseModel
    http: dict = field(default_factory=dict)  # transport tuning: timeouts, retries, caps
    token_store: TokenStore | None = None  # where an OAuth token cache lives between runs

    system: ClassVar[str]
    label: ClassVar[str]  # as budget123 names it to users
    cloud: ClassVar[bool] = True  # the first-login rule updates cloud systems only
    budget: ClassVar[ApiBudget]
    capabilities: ClassVar[Capabilities] = Capabilities()
    Settings: ClassVar[type[BaseModel]]

    def __post_init__(self) -> None:
        self.transport = Transport(
            self.base_url(), self.auth(), HttpTuning.from_dict(self.http),
            limiter_for(self.system, self.tenant_id, self.budget), headers=self.headers(),
        )

    # ---------------------------------------------------------------- composition
    @abc.abstractmethod
    def base_url(self) -> str: ...

    @abc.abstractmethod
    def auth(self) -> AuthBase | None: ...

    def headers(self) -> dict[str, str]:
        return {}

    def explain(self, error: HttpStatusError) -> SyncError | None:
        """The system's own meaning of an error status, or None for the kit's default."""
        return None

    def explain_token_refused(self, error: TokenRefused) -> SyncError:
        """The identity provider would not issue a token (OAuth systems): by default the stored
        credentials are refused."""
        return CredentialsRejected(self.tenant_id, self.system,
                                   f"{self.label}'s sign-in refused to issue a token ({error.error}).",
                                   "Store working credentials for this tenant in budget123.")

    def explain_transport(self, error: TransportError) -> SyncError | None:
        """What the system can say about a request that got no usable answer (refused, timed out,
        a wait too long), or None for the kit's default."""
        return None

    # ---------------------------------------------------------------- what the engine asks for
    @abc.abstractmethod
    def accounts(self) -> Iterator[Account]: ...

    @abc.abstractmethod
    def dimension_values(self) -> Iterator[DimensionValue]: ...

    @abc.abstractmethod
    def entry_pages(self, cursor: dict | None) -> Iterator[EntryPage]:
        """Posted entries after `cursor` (None: from the beginning), page by page."""

    def count_entries(self, cursor: dict) -> int:
        """How many posted entries the source holds up to `cursor` (capability source_count)."""
        raise NotImplementedError

    def draft_lines(self) -> Iterator[DraftLine]:
        """Lines lying in draft journals (capability draft_lines)."""
        raise NotImplementedError

    def period_totals(self) -> Iterator[PeriodTotal]:
        """The source's own totals per account and period (capability source_totals)."""
        raise NotImplementedError

    def check_access(self) -> None:
        """Raises the system's SyncError when the stored credentials no longer work."""
        next(iter(self.accounts()), None)

    def learned_settings(self) -> dict:
        """Non-secret facts the source told about itself that the tenant's connection should keep
        (e-conomic: the agreement its grant is for). Asked after a good update; only settings the
        connection lacks are stored."""
        return {}

    def diagnose(self, quick: bool = False) -> list[Finding]:
        """The connection doctor's checklist for this system, one Finding per check (findings.py).
        Default: the credentials work (`check_access`), and, with capability draft_lines, how many
        entries wait in a draft journal. A system extends it with what it can tell (an app
        registration, the calls left today, ...). `quick`: only what a failed update needs to name
        its cause, in a few requests."""
        return standard_findings(self, quick)

    def after_cursor(self, entries: list[Entry], last: int, key: str) -> tuple[list[Entry], int]:
        """A page's entries above `last`, asked in ascending `key` order: a repeat of an earlier
        page's entry (a line posted while paging shifts the pages) is dropped, and an entry out of
        order is refused, since a cursor past it could skip one. Returns them and the new `last`."""
        kept, previous = [], None
        for entry in entries:
            number = int(entry.entry_id)
            if previous is not None and number <= previous:
                raise self.bad_data(f"sent entries out of {key} order ({previous}, then {number}), though "
                                    "budget123 asked for them in that order.")
            previous = number
            if number > last:
                kept.append(entry)
                last = number
        return kept, last

    @property
    def api_calls(self) -> int:
        return self.transport.calls

    def close(self) -> None:
        self.transport.close()

    # ---------------------------------------------------------------- requests, in the system's words
    def get(self, path: str, params: dict | None = None) -> Any:
        try:
            return self.transport.get_json(path, params)[0]
        except (TransportError, HttpStatusError, TokenRefused) as exc:
            raise self._explained(exc) from None

    def pages(self, paginator: Paginator, path: str, params: dict | None = None,
              decode: Callable[[bytes], Any] | None = None) -> Iterator[tuple[list, Any]]:
        fetch = pages(self.transport, paginator, path, params, decode)
        while True:
            try:
                page = next(fetch)
            except StopIteration:
                return
            except (TransportError, HttpStatusError, TokenRefused) as exc:
                raise self._explained(exc) from None
            yield page

    @property
    def at_once(self) -> int:
        """Calls one update makes side by side: what the budget allows, at most MOST_AT_ONCE."""
        return min(self.budget.concurrent_calls, MOST_AT_ONCE)

    def side_by_side(self, fetch: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """fetch(item) for each item, as many at once as the budget allows, results in order
        (kit/ranges.py): a far-away API's round trips overlap instead of adding up."""
        return (result for _, result in in_order(fetch, items, self.at_once))

    def ranged_pages(self, fetch: Callable[[T], list[Entry]], ranges: Iterable[T], last: int, key: str,
                     cursor: Callable[[int], dict], pages_total: int | None = None,
                     first: int = 1) -> Iterator[EntryPage]:
        """One EntryPage per range of an increasing whole-number `key`: fetch(range) gives the
        range's entries in key order, the ranges are fetched side by side (`side_by_side`) and
        handed on in order, and each page's cursor, cursor(highest number so far), covers only what
        is handed on before it: a sync killed anywhere resumes with no gap and no duplicate. Pages
        are numbered from `first`."""
        fetched = in_order(fetch, ranges, self.at_once)
        try:
            for page, (_, received) in enumerate(fetched, first):
                entries, last = self.after_cursor(received, last, key)
                yield EntryPage(entries, cursor(last), page, None if pages_total is None else max(pages_total, page),
                                fetched=len(received))
        finally:
            fetched.close()  # a consumer that stops early leaves no range queued

    def entries_of_pages(self, pages: Iterable[list], entry: Callable[[Any], Entry], after: int,
                         key: str) -> list[Entry]:
        """The entries of one range's pages, in `key` order above `after`: a page boundary's repeat
        (a line booked while paging shifts the server's pages) is dropped, one out of order refused."""
        kept: list[Entry] = []
        for items in pages:
            entries, after = self.after_cursor([entry(raw) for raw in items], after, key)
            kept += entries
        return kept

    def records(self, paginator: Paginator, path: str, params: dict | None = None,
                decode: Callable[[bytes], Any] | None = None) -> Iterator[Any]:
        for items, _ in self.pages(paginator, path, params, decode):
            yield from items

    def _explained(self, exc: Exception) -> SyncError:
        if isinstance(exc, TokenRefused):  # raised by the auth while a request is signed
            return self.explain_token_refused(exc)
        if isinstance(exc, TransportError):
            explained = self.explain_transport(exc)
            if explained is not None:
                return explained
            if isinstance(exc, WaitTooLong):
                return SourceUnavailable(self.tenant_id, self.system, f"{self.label} {exc.problem}.",
                                         "Everything loaded so far was kept; the next update after that time "
                                         "resumes where this one stopped.")
            if isinstance(exc, DailyCallsSpent):
                return SourceUnavailable(
                    self.tenant_id, self.system,
                    f"budget123 has spent the calls it may make to {self.label} today for this tenant "
                    f"({int((self.budget.calls_per_day or 0) * DAILY_SHARE):,} of the daily quota of "
                    f"{self.budget.calls_per_day:,}; the rest is left for the customer's own use).",
                    "Everything loaded so far was kept; the next update after midnight resumes where this "
                    "one stopped.")
            return self.unavailable(f"{exc.problem}.") if exc.temporary else self.bad_data(f"{exc.problem}.")
        explained = self.explain(exc)
        if explained is not None:
            return explained
        if exc.status == 401:
            return CredentialsRejected(self.tenant_id, self.system,
                                       f"{self.label} refused the stored credentials.",
                                       "Store working credentials for this tenant in budget123.")
        if exc.status == 403:
            return AccessDenied(self.tenant_id, self.system, f"{self.label} refused access to {exc.path}.",
                                f"An administrator in {self.label} must give budget123's user access; then update again.")
        if exc.status == 429:
            return self.unavailable("kept refusing calls because the API call limit was reached, even "
                                    f"after waiting as {self.label} asked.")
        if exc.status >= 500:
            return self.unavailable(f"answered HTTP {exc.status} on {exc.path}, even after retries.")
        return self.bad_data(f"rejected the request for {exc.path} (HTTP {exc.status}: "
                             f"{error_detail(exc.body) or 'no detail'}).")

    def unavailable(self, problem: str) -> SourceUnavailable:
        return SourceUnavailable(self.tenant_id, self.system, f"{self.label} {problem}",
                                 "This is usually temporary: update again in a few minutes.")

    def bad_data(self, problem: str) -> BadSourceData:
        return BadSourceData(
            self.tenant_id, self.system, f"{self.label} {problem}",
            f"Nothing from it was loaded. Update again; if it persists, the data team must look at "
            f"this tenant's data in {self.label}.",
        )

    # ---------------------------------------------------------------- connection settings
    @classmethod
    def parse_connection(cls, tenant_id: str, raw: dict) -> BaseModel:
        """Validate a tenant's connection JSON, or raise ConfigurationError naming the field."""
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
        return [n for n, f in cls.Settings.model_fields.items() if _is_secret(f.annotation)]

    def secrets(self) -> list[str]:
        return [getattr(self.settings, n).get_secret_value() for n in self.secret_fields()]


def error_detail(body: Any) -> str:
    """The message in an error body: e-conomic's `message`, OData's `error.message`."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return str(inner.get("message", ""))[:300]
        return str(body.get("message", ""))[:300]
    return str(body or "")[:300]


ORE = Decimal("0.01")
MAX_DIGITS = 16  # NUMERIC(18, 2): sixteen digits before the decimal point


def money(value: Any) -> Decimal:
    """An amount from the API, exactly: JSON numbers arrive as Decimal, never through float.
    One quantize on the common path: it is called twice per entry, a million times a sync."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise ValueError(f"amount {value!r} is not a number")
    try:
        amount = value.quantize(ORE) if isinstance(value, Decimal) else Decimal(value).quantize(ORE)
    except InvalidOperation:  # more digits than any amount has (1e400)
        raise ValueError(f"amount {value} is beyond what an amount can be (less than 10^16)") from None
    if amount != value:
        raise ValueError(f"amount {value} has more than two decimals")
    if amount.adjusted() >= MAX_DIGITS:
        raise ValueError(f"amount {value} is beyond what an amount can be (less than 10^16)")
    return amount


def whole_number(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)) or value != int(value):
        raise ValueError(f"{name} {value} is not a whole number")
    return int(value)


HttpsUrl = Annotated[str, AfterValidator(https_or_loopback)]


def _usable_secret(value: SecretStr) -> SecretStr:
    # The messages never show the value: it is a secret, and a control character would not print.
    text = value.get_secret_value()
    if not text.strip():
        raise ValueError("must not be empty")
    for position, char in enumerate(text, 1):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"contains a control character (a line break, tab or the like) at character "
                             f"{position}; give the value without it")
    return value


SecretText = Annotated[SecretStr, AfterValidator(_usable_secret)]
"""A secret setting (token, password, key): stored encrypted, never shown, and refused when it is
empty or holds a control character, which no system accepts and an HTTP header cannot carry. Every
system's secret fields use it."""


def _is_secret(annotation: Any) -> bool:
    """SecretStr or SecretText, also inside Optional[...]."""
    if get_origin(annotation) is Annotated:
        return _is_secret(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_secret(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, SecretStr)
