"""A deterministic Danish company's books, computed rather than stored, for any system's emulator.

Entry n is *computed* from n (a 64-bit hash of its voucher number picks the kind, accounts, amount,
text...), so a million posted entries cost nothing until asked for; only what happens later -
bookings, drafts, account edits - is stored. Nothing here knows how a particular accounting system
shows these books: an emulator turns `Line`s and account dicts into its own API's shapes. The account
types are e-conomic's names for them (profitAndLoss, status, heading, ...), the most detailed
vocabulary among the systems; another system's emulator maps them to its own.

Amounts are whole øre (ints) everywhere; `money` writes them as exact decimal literals.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from bisect import bisect_right
from collections import defaultdict
from decimal import Decimal
from typing import Callable, Iterator, NamedTuple

# Account tuples: (number, type, name, debitCredit, vatCode).
CHART: tuple[tuple[int, str, str, str, str | None], ...] = (
    (1000, "headingStart", "RESULTATOPGØRELSE", "debit", None),
    (1010, "heading", "Omsætning", "credit", None),
    (1100, "profitAndLoss", "Salg af varer", "credit", "U25"),
    (1110, "profitAndLoss", "Salg af ydelser", "credit", "U25"),
    (1120, "profitAndLoss", "Salg af varer EU", "credit", "UEUV"),
    (1190, "sumInterval", "Omsætning i alt", "credit", None),
    (1200, "heading", "Vareforbrug", "debit", None),
    (1300, "profitAndLoss", "Vareforbrug", "debit", "I25"),
    (1310, "profitAndLoss", "Fragt", "debit", "I25"),
    (1390, "sumInterval", "Vareforbrug i alt", "debit", None),
    (1400, "totalFrom", "Dækningsbidrag", "credit", None),
    (2000, "heading", "Personaleomkostninger", "debit", None),
    (2200, "profitAndLoss", "Løn", "debit", None),
    (2210, "profitAndLoss", "Pension", "debit", None),
    (2220, "profitAndLoss", "ATP", "debit", None),
    (2700, "heading", "Lokaleomkostninger", "debit", None),
    (2800, "profitAndLoss", "Husleje", "debit", None),
    (2810, "profitAndLoss", "El og varme", "debit", "I25"),
    (2900, "heading", "Administrationsomkostninger", "debit", None),
    (3000, "profitAndLoss", "Kontorartikler", "debit", "I25"),
    (3010, "profitAndLoss", "Telefon og internet", "debit", "I25"),
    (3020, "profitAndLoss", "Revisor", "debit", "I25"),
    (3030, "profitAndLoss", "Forsikringer", "debit", None),
    (3040, "profitAndLoss", "Software og licenser", "debit", "I25"),
    (3050, "profitAndLoss", "Bankgebyrer", "debit", None),
    (3060, "profitAndLoss", "Reklame og markedsføring", "debit", "I25"),  # never posted to
    (3070, "profitAndLoss", "Gammel kontorkonto", "debit", None),  # barred, never posted to
    (3500, "profitAndLoss", "Afskrivninger", "debit", None),
    (3600, "profitAndLoss", "Renteudgifter", "debit", None),
    (3900, "totalFrom", "Årets resultat", "credit", None),
    (5000, "headingStart", "BALANCE", "debit", None),
    (5100, "heading", "Aktiver", "debit", None),
    (5500, "status", "Inventar", "debit", None),
    (5600, "status", "Debitorer", "debit", None),
    (5800, "status", "Bank", "debit", None),
    (5810, "status", "Kasse", "debit", None),
    (5890, "sumInterval", "Aktiver i alt", "debit", None),
    (6000, "heading", "Passiver", "credit", None),
    (6100, "status", "Egenkapital", "credit", None),
    (6500, "status", "Kreditorer", "credit", None),
    (6700, "status", "Salgsmoms", "credit", None),
    (6710, "status", "Købsmoms", "debit", None),
    (6720, "status", "Momsafregning", "credit", None),
    (6890, "sumInterval", "Passiver i alt", "credit", None),
    (6990, "sumAlpha", "Balancekontrol", "debit", None),
)
BARRED_ACCOUNTS = frozenset({3070})
SUMMED = {1190: (1100, 1120), 1390: (1300, 1310), 5890: (5500, 5810), 6890: (6100, 6720)}
TOTAL_FROM = {1400: 1000, 3900: 1000}
POSTABLE_TYPES = ("profitAndLoss", "status")
_CHART_NAME = {number: name for number, _, name, _, _ in CHART}
_CHART_VAT = {number: vat for number, _, _, _, vat in CHART}
_PNL = frozenset(number for number, kind, *_ in CHART if kind == "profitAndLoss")

DEPARTMENTS = ((1, "Salg"), (2, "Administration"), (3, "Produktion"), (4, "Lager"), (5, "Udvikling"))
BARRED_DEPARTMENTS = frozenset({5})
# (number, name, [(department, percentage)]); one per department at 100 %, then the split ones.
DISTRIBUTIONS = tuple((n, name, [(n, 100)]) for n, name in DEPARTMENTS) + (
    (6, "Fælles salg og administration", [(1, 50), (2, 50)]),
    (7, "Produktion og lager", [(3, 60), (4, 40)]),
)
_ACTIVE_DISTRIBUTIONS = (1, 2, 3, 4, 6, 7)

CUSTOMERS = (
    "Jensen & Søn ApS", "Nordisk Træ A/S", "Østergaard Byg ApS", "Københavns Kaffebar",
    "Ålborg Maskinfabrik A/S", "Fynsk Grønt I/S", "Hansen Rådgivning", "Møller Transport ApS",
    "Lykke Design", "Sørensen El-service", "Bæk & Bølge ApS", "Skovgaard Tømrer",
)
SUPPLIERS = (
    "Ørsted Salg & Service", "TDC Erhverv", "Dansk Papir ApS", "PostNord Danmark", "DSV Road A/S",
    "Microsoft Danmark ApS", "Tryg Forsikring", "Beierholm Revision", "Lemvigh-Müller",
    "Ejendomsselskabet Nørrebro",
)
MONTHS = ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september",
          "oktober", "november", "december")


class _Kind(NamedTuple):
    """One kind of voucher the generator books: its type, account pairs, amount range and text."""
    entry_type: str
    weight: int
    pairs: tuple[tuple[int, int], ...]  # (debit account, credit account)
    min_cents: int
    max_cents: int
    foreign: bool  # may be in EUR
    text: Callable[[int, str, str, str], str]  # (invoice no, party, account name, "marts 2024")


_EXPENSES = (1300, 1310, 2800, 2810, 3000, 3010, 3020, 3030, 3040)
KINDS = (
    _Kind("customerInvoice", 30, ((5600, 1100), (5600, 1110), (5600, 1120)), 500_00, 80_000_00,
          True, lambda no, c, acc, month: f"Faktura {no} {c}"),
    _Kind("supplierInvoice", 25, tuple((e, 6500) for e in _EXPENSES), 100_00, 40_000_00, True,
          lambda no, s, acc, month: f"Købsfaktura {no} {s} - {acc}"),
    _Kind("customerPayment", 15, ((5800, 5600),), 500_00, 80_000_00, True,
          lambda no, c, acc, month: f"Indbetaling fra {c}, faktura {no}"),
    _Kind("supplierPayment", 12, ((6500, 5800),), 100_00, 40_000_00, True,
          lambda no, s, acc, month: f"Betaling til {s}"),
    _Kind("financeVoucher", 15, ((2200, 5800), (2210, 5800), (2220, 5800), (3050, 5800),
                                 (3600, 5800), (5810, 5800)), 50_00, 60_000_00, False,
          lambda no, p, acc, month: f"{acc} {month}"),
    _Kind("systemEntry", 3, ((6700, 6720), (6720, 6710), (3500, 5500)), 1_000_00, 100_000_00,
          False, lambda no, p, acc, month: f"{acc} {month}"),
)
# The first voucher of every year carries the opening balance.
OPENING = _Kind("openingEntry", 0, ((5800, 6100),), 100_000_00, 1_000_000_00, False,
                lambda no, p, acc, month: f"Primobeløb {month.split()[-1]}")
# One slot per unit of weight: (hash % len) picks a kind with the weights above.
_KIND_SLOTS = tuple(kind for kind in KINDS for _ in range(kind.weight))

_MASK64 = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread, run-to-run stable 64-bit hash of an int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def money(cents: int) -> str:
    """Exact JSON number literal for an amount in øre: 123450 -> 1234.50 (never through float)."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole}.{rest:02d}"


def to_decimal(cents: int) -> Decimal:
    return Decimal(money(cents))


# ---------------------------------------------------------------------------------------------------
# Accounting years
class Year(NamedTuple):
    key: str  # "2024" or "2022/2023"
    first: dt.date
    last: dt.date
    closed: bool
    vstart: int  # first generated voucher number of the year
    vcount: int  # number of generated vouchers in the year
    dates: tuple[str, ...]  # ISO date of each day of the year, by day index

    @property
    def n_range(self) -> tuple[int, int]:
        """Generated entry numbers of the year (inclusive; empty when lo > hi)."""
        return 2 * self.vstart - 1, 2 * (self.vstart + self.vcount) - 2

    def date_of(self, voucher: int) -> str:
        # Vouchers are spread evenly over the days, so dates never decrease with the number.
        return self.dates[(voucher - self.vstart) * len(self.dates) // self.vcount]

    def months(self) -> list[tuple[dt.date, dt.date]]:
        out, start = [], self.first
        while start <= self.last:
            nxt = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            out.append((start, min(self.last, nxt - dt.timedelta(days=1))))
            start = nxt
        return out


def _year_span(key: str) -> tuple[dt.date, dt.date]:
    if re.fullmatch(r"\d{4}", key):
        return dt.date(int(key), 1, 1), dt.date(int(key), 12, 31)
    match = re.fullmatch(r"(\d{4})/(\d{4})", key)
    if match and int(match[2]) == int(match[1]) + 1:
        # [?] A broken year is taken to run 1 July to 30 June.
        return dt.date(int(match[1]), 7, 1), dt.date(int(match[2]), 6, 30)
    raise ValueError(f"year key {key!r} is neither 'YYYY' nor 'YYYY/YYYY+1'")


def _layout_years(keys: list[str], closed: set[str], vouchers: int) -> list[Year]:
    """Spreads the generated vouchers over the years in proportion to their length."""
    spans = sorted((_year_span(k), k) for k in keys)
    for (a, _), (b, _) in zip(spans, spans[1:]):
        if b[0] <= a[1]:
            raise ValueError("accounting years overlap")
    total_days = sum((last - first).days + 1 for (first, last), _ in spans)
    years, days_before = [], 0
    for (first, last), key in spans:
        days = (last - first).days + 1
        vstart = 1 + vouchers * days_before // total_days
        vend = 1 + vouchers * (days_before + days) // total_days
        dates = tuple((first + dt.timedelta(d)).isoformat() for d in range(days))
        years.append(Year(key, first, last, key in closed, vstart, vend - vstart, dates))
        days_before += days
    return years


# ---------------------------------------------------------------------------------------------------
class Line(NamedTuple):
    """One posted entry or draft line, amounts in øre. number is 0 for a draft line."""
    number: int
    entry_type: str
    voucher: int
    date: str
    account: int
    amount: int
    base: int  # amount in base currency
    currency: str
    text: str
    distribution: int  # departmental distribution number, 0 = none
    vat: str | None
    year: str


class Snapshot(NamedTuple):
    """What changes, read at one instant: a request works on it without holding the lock."""
    remap: dict[int, int]
    booked: tuple[Line, ...]
    drafts: tuple[Line, ...]
    next_number: int


class Company:
    """The books: `entries` generated posted entries (two per voucher) spread over the years, and
    whatever is booked, drafted or edited later. Thread-safe; readers take a `snapshot()`."""

    def __init__(self, entries: int = 2000, seed: int = 1, years: list[str] | None = None,
                 closed_years: list[str] = (), drafts: int = 4):
        if entries < 0 or entries % 2:
            raise ValueError("entries must be a non-negative even number (vouchers have two lines)")
        self.seed = seed
        self._seed_key = mix(seed)
        self.generated = entries
        self.years = _layout_years(list(years or ["2024", "2025", "2026"]), set(closed_years),
                                   entries // 2)
        self._vstarts = [y.vstart for y in self.years]
        self._last_pair: tuple[int, dict, tuple[Line, Line] | None] = (0, {}, None)
        self.lock = threading.RLock()
        # Everything below changes; tuples and dicts are replaced, never changed in place, so a
        # reader can use a consistent snapshot without holding the lock.
        self.accounts = {n: {"number": n, "type": t, "name": name, "debitCredit": dc, "vat": vat,
                             "barred": n in BARRED_ACCOUNTS} for n, t, name, dc, vat in CHART}
        self.remap: dict[int, int] = {}  # chart number of generated postings -> current number
        self.booked: tuple[Line, ...] = ()  # posted after the generated ones, in number order
        self.drafts: tuple[Line, ...] = ()
        self.next_number = entries + 1
        self._next_voucher = entries // 2 + 1
        self._version = 0
        self._generated_sums_cache: dict[tuple[int, dt.date], int] | None = None
        self._generated_sums_lock = threading.Lock()
        self._sums_cache: tuple[int, dict[tuple[int, dt.date], int]] | None = None
        if drafts:
            self.add_draft(drafts)

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(self.remap, self.booked, self.drafts, self.next_number)

    # ------------------------------------------------------------------ generation
    def _voucher(self, voucher: int, opening: bool) -> tuple[_Kind, int, int, int, int, str, int]:
        """(kind, debit account, credit account, amount, base amount, currency, hash) of a voucher."""
        h = mix(self._seed_key ^ voucher)
        # Bits of h: 0-15 kind, 16-23 account pair, 24-43 amount, 44-47 currency, 48-51 rate,
        # 52-53 has distribution, 54-61 which distribution, 62 vat code, 30+ party.
        kind = OPENING if opening else _KIND_SLOTS[(h & 0xFFFF) % len(_KIND_SLOTS)]
        debit, credit = kind.pairs[((h >> 16) & 0xFF) % len(kind.pairs)]
        span = kind.max_cents - kind.min_cents
        amount = kind.min_cents + (((h >> 24) & 0xFFFFF) * span >> 20)
        if kind.foreign and (h >> 44) & 0xF == 0:  # one in sixteen is in EUR
            rate = 74_550 + ((h >> 48) & 0xF) * 10  # DKK per EUR x 10,000: 7.4550 - 7.4700
            euros = amount * 10_000 // rate  # the same size of amount, invoiced in EUR
            return kind, debit, credit, euros, (euros * rate + 5_000) // 10_000, "EUR", h
        return kind, debit, credit, amount, amount, "DKK", h

    def _pair(self, numbers: tuple[int, int], voucher: int, opening: bool, date: str, year: str,
              remap: dict[int, int]) -> tuple[Line, Line]:
        """The debit and the credit line of a voucher (numbered `numbers`; 0 for drafts)."""
        kind, debit, credit, amount, base, currency, h = self._voucher(voucher, opening)
        parties = CUSTOMERS if kind.entry_type.startswith("customer") else SUPPLIERS
        named = debit if debit in _PNL or credit not in _PNL else credit
        text = kind.text(20_000 + voucher, parties[(h >> 30) % len(parties)], _CHART_NAME[named],
                         f"{MONTHS[int(date[5:7]) - 1]} {date[:4]}")
        distribution, vat = 0, None
        if (h >> 52) & 3:  # three P&L lines in four carry a departmental distribution
            distribution = _ACTIVE_DISTRIBUTIONS[((h >> 54) & 0xFF) % len(_ACTIVE_DISTRIBUTIONS)]
        if (h >> 62) & 1:
            vat = _CHART_VAT[named]
        return tuple(
            Line(number, kind.entry_type, voucher, date, remap.get(account, account), cents,
                 base_cents, currency, text, distribution if account in _PNL else 0,
                 vat if account in _PNL else None, year)
            for number, account, cents, base_cents in ((numbers[0], debit, amount, base),
                                                       (numbers[1], credit, -amount, -base)))

    def line(self, n: int, remap: dict[int, int]) -> Line:
        """Generated entry n (1..generated), its account renumbered by `remap`: the hot path."""
        voucher = (n + 1) >> 1
        memo = self._last_pair  # pages ask for both lines of a voucher in a row: compute it once
        if memo[0] != voucher or memo[1] is not remap:
            year = self.years[bisect_right(self._vstarts, voucher) - 1]
            pair = self._pair((2 * voucher - 1, 2 * voucher), voucher, voucher == year.vstart,
                              year.date_of(voucher), year.key, remap)
            memo = self._last_pair = (voucher, remap, pair)
        return memo[2][0 if n & 1 else 1]

    def generated_date(self, n: int) -> str:
        voucher = (n + 1) >> 1
        return self.years[bisect_right(self._vstarts, voucher) - 1].date_of(voucher)

    def phantom_line(self, k: int, year: Year, remap: dict[int, int]) -> Line:
        """The k-th (0, 1, ...) of an endless supply of plausible entries in `year` that are never
        booked: numbered after everything that exists, so each is new to a client."""
        with self.lock:
            first_number, first_voucher = self.next_number, self._next_voucher
        voucher = first_voucher + k // 2
        number = first_number + k - k % 2
        pair = self._pair((number, number + 1), voucher, False, self._pick_date(year, voucher),
                          year.key, remap)
        return pair[k % 2]

    def year(self, key: str | None) -> Year:
        """The year with this key; the latest for None."""
        if key is None:
            return self.years[-1]
        for year in self.years:
            if year.key == key:
                return year
        raise ValueError(f"no accounting year {key!r}")

    def _open_year(self, key: str | None) -> Year:
        year = self.year(key)
        if year.closed:
            raise ValueError(f"accounting year {year.key} is closed")
        return year

    def _pick_date(self, year: Year, salt: int) -> str:
        return year.dates[mix(self._seed_key ^ (salt << 1) ^ 0x5A5A) % len(year.dates)]

    # ------------------------------------------------------------------ truth
    def entry_count(self) -> int:
        with self.lock:
            return self.generated + len(self.booked)

    def posted_lines(self) -> Iterator[Line]:
        """Every posted entry in number order: the generated ones, then the booked ones."""
        remap, booked = self.snapshot()[:2]
        for n in range(1, self.generated + 1):
            yield self.line(n, remap)
        yield from booked

    def balances(self) -> list[tuple[dict, int, int]]:
        """(account, posted balance, balance of the draft lines) of every account, by number."""
        sums = self.sums()
        with self.lock:
            accounts, drafts = list(self.accounts.values()), self.drafts
        balance, pending = defaultdict(int), defaultdict(int)
        for (account, _), cents in sums.items():
            balance[account] += cents
        for line in drafts:
            pending[line.account] += line.base
        return [(a, balance[a["number"]], pending[a["number"]])
                for a in sorted(accounts, key=lambda a: a["number"])]

    def _generated_sums(self) -> dict[tuple[int, dt.date], int]:
        """Sums of the generated entries by chart account and month: one pass, cached for good
        (generated entries never change; renumbering is applied on top)."""
        with self._generated_sums_lock:
            if self._generated_sums_cache is None:
                sums: dict[tuple[int, dt.date], int] = defaultdict(int)
                for year in self.years:
                    month_of = [dt.date.fromisoformat(d).replace(day=1) for d in year.dates]
                    for voucher in range(year.vstart, year.vstart + year.vcount):
                        _, debit, credit, _, base, _, _ = self._voucher(voucher, voucher == year.vstart)
                        month = month_of[(voucher - year.vstart) * len(month_of) // year.vcount]
                        sums[(debit, month)] += base
                        sums[(credit, month)] -= base
                self._generated_sums_cache = dict(sums)
            return self._generated_sums_cache

    def sums(self) -> dict[tuple[int, dt.date], int]:
        """All posted amounts in base currency by (current account number, first of month), øre."""
        generated = self._generated_sums()
        with self.lock:
            version, remap, booked = self._version, self.remap, self.booked
            if self._sums_cache and self._sums_cache[0] == version:
                return self._sums_cache[1]
        sums: dict[tuple[int, dt.date], int] = defaultdict(int)
        for (account, month), cents in generated.items():
            sums[(remap.get(account, account), month)] += cents
        for line in booked:
            sums[(line.account, dt.date.fromisoformat(line.date).replace(day=1))] += line.base
        with self.lock:
            self._sums_cache = (version, dict(sums))
        return self._sums_cache[1]

    # ------------------------------------------------------------------ what happens later
    def book_entries(self, count: int, year: str | None = None,
                     on: dt.date | None = None) -> list[int]:
        """Books count/2 balanced vouchers into `year` (default: the latest), dated `on` or on a
        day picked from the entry number. Returns the new entry numbers."""
        if count <= 0 or count % 2:
            raise ValueError("count must be a positive even number (vouchers have two lines)")
        target = self._open_year(year)
        if on is not None and not target.first <= on <= target.last:
            raise ValueError(f"{on} is outside accounting year {target.key}")
        with self.lock:
            new = list(self.booked)
            for _ in range(count // 2):
                n, voucher = self.next_number, self._next_voucher
                date = on.isoformat() if on else self._pick_date(target, n)
                new += self._pair((n, n + 1), voucher, False, date, target.key, self.remap)
                self.next_number, self._next_voucher = n + 2, voucher + 1
            numbers = [line.number for line in new[len(self.booked):]]
            self.booked = tuple(new)
            self._version += 1
        return numbers

    def add_draft(self, count: int = 2, year: str | None = None) -> list[Line]:
        """Puts count/2 balanced vouchers in the draft journal; returns the lines."""
        if count <= 0 or count % 2:
            raise ValueError("count must be a positive even number (vouchers have two lines)")
        target = self._open_year(year)
        with self.lock:
            lines = []
            for _ in range(count // 2):
                voucher = self._next_voucher
                self._next_voucher += 1
                date = self._pick_date(target, voucher)
                lines += self._pair((0, 0), voucher, False, date, target.key, self.remap)
            self.drafts += tuple(lines)
            self._version += 1
        return lines

    def book_drafts(self) -> list[int]:
        """Books every draft line as a posted entry (keeping its voucher) and empties the journal."""
        with self.lock:
            booked = tuple(line._replace(number=self.next_number + i)
                           for i, line in enumerate(self.drafts))
            self.next_number += len(booked)
            self.booked += booked
            self.drafts = ()
            self._version += 1
        return [line.number for line in booked]

    def add_account(self, number: int, name: str, account_type: str = "profitAndLoss") -> None:
        with self.lock:
            if number in self.accounts:
                raise ValueError(f"account {number} exists")
            self.accounts = {**self.accounts, number: {
                "number": number, "type": account_type, "name": name, "barred": False,
                "debitCredit": "debit", "vat": None}}
            self._version += 1

    def rename_account(self, number: int, new_name: str) -> None:
        with self.lock:
            account = self._account(number)
            self.accounts = {**self.accounts, number: {**account, "name": new_name}}
            self._version += 1

    def renumber_account(self, old: int, new: int) -> None:
        """Moves an account to a new number; its entries (posted and draft) move with it."""
        with self.lock:
            account = self._account(old)
            if new in self.accounts:
                raise ValueError(f"account {new} exists")
            accounts = {n: a for n, a in self.accounts.items() if n != old}
            accounts[new] = {**account, "number": new}
            remap = {chart: (new if now == old else now) for chart, now in self.remap.items()}
            if old not in self.remap:  # the chart account `old` still held its own number
                remap[old] = new
            move = lambda line: line._replace(account=new) if line.account == old else line
            self.accounts, self.remap = accounts, remap
            self.booked = tuple(map(move, self.booked))
            self.drafts = tuple(map(move, self.drafts))
            self._version += 1

    def delete_account(self, number: int) -> None:
        used = {account for account, _ in self.sums()}
        with self.lock:
            self._account(number)
            if number in used or any(line.account == number for line in self.drafts):
                raise ValueError(f"account {number} has entries and cannot be deleted")
            self.accounts = {n: a for n, a in self.accounts.items() if n != number}
            self._version += 1

    def _account(self, number: int) -> dict:
        if number not in self.accounts:
            raise ValueError(f"no account {number}")
        return self.accounts[number]
