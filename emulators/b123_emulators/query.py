"""Filters and selections: how an emulator answers a filtered page of a million entries in O(page).

A filter is held as OR-of-ANDs of `Term`s (field, operator, value), whatever syntax it came in:
`parse_filter` reads e-conomic's `field$op:value` terms joined with `$and:` / `$or:`;
`parse_odata_filter` reads OData's `$filter=Field gt 123 and Date ge datetime'...'` into the same
terms. `matches` tests a term list against any item.

Entry numbers are kept as sets of sorted, disjoint, inclusive ranges (`intersect`, `union`,
`complement`, `runs`), and a `Selection` answers count, n-th element and rank in O(log ranges).
`monotone_ranges` turns a term on a field that never decreases with the entry number (the number
itself, the voucher, the date) into ranges by binary search, without touching the entries.
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left, bisect_right
from decimal import InvalidOperation
from typing import Any, Callable, Iterator, NamedTuple


class QueryError(ValueError):
    """A filter the server must refuse (HTTP 400): a message, a hint, extra fields for the body."""

    def __init__(self, message: str, hint: str = "", **extra: Any):
        super().__init__(message)
        self.message, self.hint, self.extra = message, hint, extra


class Term(NamedTuple):
    field: str
    op: str  # eq ne gt gte lt lte in nin like
    value: Any  # converted to the field's type; a list for in/nin; a regex for like


Dnf = list[list[Term]]

# e-conomic: "field$op:value" terms joined with $and: / $or: ($and: binds tighter [?]).
_TERM = re.compile(r"(\w+)\$(eq|ne|gte|gt|lte|lt|in|nin|like):(.*)", re.S)


def parse_filter(text: str | None, fields: dict[str, type]) -> Dnf | None:
    """Parses a filter into OR-of-ANDs; QueryError for bad syntax or a field that cannot be
    filtered on. `fields` maps each filterable field to its type (int, str, bool, Decimal, dt.date)."""
    if not text:
        return None
    dnf = []
    for part in text.split("$or:"):
        conj = []
        for raw in part.split("$and:"):
            match = _TERM.fullmatch(raw)
            if not match:
                raise QueryError(f"The filter term '{raw}' is not valid.",
                                 "Use field$operator:value, e.g. entryNumber$gt:123.")
            field, op, value = match.groups()
            if field not in fields:
                raise QueryError(f"The property '{field}' cannot be used for filtering.",
                                 "Filter on one of allowedFilteringFields.",
                                 allowedFilteringFields=sorted(fields))
            conj.append(Term(field, op, _filter_value(op, value, fields[field])))
        dnf.append(conj)
    return dnf


# OData: `Field op literal` terms joined by `and` / `or` (and binds tighter; no parentheses). A
# literal is a number, a 'string' ('' for a quote inside) or a typed one such as datetime'...'.
_ODATA_OPS = {"eq": "eq", "ne": "ne", "gt": "gt", "ge": "gte", "lt": "lt", "le": "lte"}
_ODATA_TERM = re.compile(r"\s*(\w+)\s+(\w+)\s+(?:(\w+)?'((?:[^']|'')*)'|([^\s']+))\s*")
_ODATA_JOIN = re.compile(r"(and|or)(?=\s)")


def parse_odata_filter(text: str | None, fields: dict[str, type], entity: str = "the entity") -> Dnf | None:
    """An OData `$filter` as OR-of-ANDs of `Term`s; QueryError (400) for what cannot be read or a
    field that cannot be filtered on. A typed literal (datetime'2024-01-01T00:00:00') gives its
    text, a date field takes the date part of a datetime; whether `or` is allowed, and across which
    fields, is the emulator's to decide."""
    if not text:
        return None
    dnf: Dnf = [[]]
    at = 0
    while True:
        term = _ODATA_TERM.match(text, at)
        if term is None:
            raise QueryError(f"Syntax error in the filter '{text}' at position {at}.")
        field, op, literal_type, quoted, bare = term.groups()
        if field not in fields:
            raise QueryError(f"Could not find a property named '{field}' on {entity}.")
        if op not in _ODATA_OPS:
            raise QueryError(f"The operator '{op}' is not supported in the filter '{text}'.")
        raw = quoted.replace("''", "'") if quoted is not None else bare
        if literal_type == "datetime" and fields[field] is dt.date:
            raw = raw[:10]
        dnf[-1].append(Term(field, _ODATA_OPS[op], convert(raw, fields[field])))
        at = term.end()
        if at == len(text):
            return dnf
        join = _ODATA_JOIN.match(text, at)
        if join is None:
            raise QueryError(f"Syntax error in the filter '{text}' at position {at}.")
        if join[1] == "or":
            dnf.append([])
        at = join.end()


def _filter_value(op: str, raw: str, kind: type) -> Any:
    if op == "like":
        # [?] '*' and '%' are wildcards; without one, the value may appear anywhere. Case-insensitive.
        pattern = ".*".join(re.escape(p) for p in re.split(r"[*%]", raw))
        return re.compile(pattern if re.search(r"[*%]", raw) else f".*{pattern}.*", re.I | re.S)
    if op in ("in", "nin"):
        items = raw.strip()[1:-1] if raw.strip().startswith("[") else raw
        return [convert(item.strip(), kind) for item in items.split(",") if item.strip()]
    return convert(raw, kind)


def convert(raw: str, kind: type) -> Any:
    """A filter value as the field's type (dates stay ISO text, which compares in date order)."""
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind is dt.date:
            return dt.date.fromisoformat(raw).isoformat()  # compared as ISO text
        return kind(raw)
    except (ValueError, InvalidOperation):
        raise QueryError(f"The filter value '{raw}' is not valid.",
                         f"Expected a {kind.__name__}.") from None


def match(term: Term, x: Any) -> bool:
    op, v = term.op, term.value
    if op == "like":
        return x is not None and v.fullmatch(str(x)) is not None
    if op == "in":
        return x in v
    if op == "nin":
        return x not in v
    if op == "eq":
        return x == v
    if op == "ne":
        return x != v
    if x is None:
        return False
    return {"gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[op]


def matches(dnf: Dnf, get: Callable[[str], Any]) -> bool:
    """Whether the item whose field values `get` returns passes the filter."""
    return any(all(match(t, get(t.field)) for t in conj) for conj in dnf)


# ---------------------------------------------------------------------------------------------------
# Sets of entry numbers as sorted, disjoint, inclusive ranges: how filters stay O(page) at 1M.
Ranges = list[tuple[int, int]]


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def union(*sets: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(r for s in sets for r in s):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def complement(a: Ranges, lo: int, hi: int) -> Ranges:
    out, at = [], lo
    for a_lo, a_hi in a:
        if a_lo > at:
            out.append((at, a_lo - 1))
        at = max(at, a_hi + 1)
    if at <= hi:
        out.append((at, hi))
    return out


def runs(numbers: Iterator[int]) -> Ranges:
    """Ranges of increasing numbers."""
    out: Ranges = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def monotone_ranges(term: Term, lo: int, hi: int, key: Callable[[int], Any]) -> Ranges:
    """Numbers in lo..hi whose field, key(n), satisfies the term, by binary search: key must never
    decrease with n."""
    numbers = range(lo, hi + 1)

    def equal(value: Any) -> Ranges:
        first = lo + bisect_left(numbers, value, key=key)
        last = lo + bisect_right(numbers, value, key=key) - 1
        return [(first, last)] if first <= last else []

    op, value = term.op, term.value
    if op == "like":  # a pattern on a number or date: rare, so test every candidate
        return runs(n for n in numbers if value.fullmatch(str(key(n))))
    if op in ("eq", "in"):
        return union(*(equal(v) for v in (value if op == "in" else [value])))
    if op in ("ne", "nin"):
        return complement(union(*(equal(v) for v in (value if op == "nin" else [value]))), lo, hi)
    if op in ("gt", "gte"):
        cut = (bisect_right if op == "gt" else bisect_left)(numbers, value, key=key)
        return [(lo + cut, hi)]
    cut = (bisect_left if op == "lt" else bisect_right)(numbers, value, key=key)
    return [(lo, lo + cut - 1)]


class Selection:
    """Ranges with O(log) count, n-th element and rank."""

    def __init__(self, ranges: Ranges):
        self.ranges = [(a, b) for a, b in ranges if a <= b]
        self.starts = [a for a, _ in self.ranges]
        self.before, total = [], 0
        for a, b in self.ranges:
            self.before.append(total)
            total += b - a + 1
        self.count = total

    def nth(self, i: int) -> int:
        k = bisect_right(self.before, i) - 1
        return self.ranges[k][0] + i - self.before[k]

    def count_le(self, n: int) -> int:
        k = bisect_right(self.starts, n) - 1
        if k < 0:
            return 0
        a, b = self.ranges[k]
        return self.before[k] + min(n, b) - a + 1

    def __iter__(self) -> Iterator[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)
