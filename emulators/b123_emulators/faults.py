"""Switchable faults: what an emulator can be told to do wrong, to test a client's resilience.

`Faults` holds the switches, all off by default, and knows no system's shapes. Who acts on them:

- `EmulatorServer.gate()` (server.py), which an emulator calls once a request is authenticated, turns
  `check()` into the error answer: `revoked` (401), `forbidden` (403), `rate_limit(n)` and
  `retry_after_seconds` (429), `server_errors(n)` (5xx). The wording is the emulator's
  (`EmulatorServer.refusals`).
- The server base applies the transport faults to every response: `drip_bytes_per_second`,
  `truncate_body`.
- The emulator applies the page faults where its pages are made: `page_delay`, `corrupt`,
  `repeat_boundary_entry`, `leak_drafts`, `book_while_paging` (`page_served()`), and the hostile
  ones `foreign_next_page`, `redirect_to` (one-shot: `once()`), `self_loop_next_page`,
  `endless_pages`, `huge_page_mb` (`padded_json()`), `gzip_bomb_mb` (`gzip_bomb()`).

An emulator says in its own docstring which of the page faults it implements.
"""

from __future__ import annotations

import functools
import struct
import threading
import time
import zlib
from typing import Any, Iterable, Iterator, NamedTuple

MIB = 1 << 20


class Refusal(NamedTuple):
    """An error answer a fault asks for: the status, the kind (the key of the emulator's wording)
    and headers to send with it."""
    status: int
    kind: str  # revoked | forbidden | rate_limited | server_error
    headers: dict[str, str]


class _OneShot:
    """A switch that acts on the first request it applies to after it is set (see Faults.once);
    reading it gives the value set, fired or not."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, faults: Any, owner: type | None = None) -> Any:
        return self if faults is None else faults.__dict__.get(self.name)

    def __set__(self, faults: Any, value: Any) -> None:
        with faults._lock:
            faults.__dict__[self.name] = value
            faults._fired.discard(self.name)


class Faults:
    """Switchable failures. All off by default; counters are consumed one request at a time."""

    # Hostile servers, one-shot: an origin such as "http://127.0.0.2:8080" (no path).
    foreign_next_page = _OneShot()  # the next entries page's nextPage leads to this origin
    redirect_to = _OneShot()  # the next entries request is answered 302 to this origin

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired: set[str] = set()
        # Refusals (gate)
        self.revoked = False  # 401 on every request
        self.forbidden = False  # 403 on every request
        self.retry_after_seconds: int | None = None  # 429 with this Retry-After on every request
        self._rate_limited, self._retry_after = 0, None
        self._server_errors, self._server_status = 0, 503
        # Pages
        self.page_delay = 0.0  # seconds before each entries page is sent...
        self.page_delay_after = 0  # ...once this many have been sent at once (a sync caught mid-way)
        self.page_delay_above: int | None = None  # ...only pages whose first key is above this one
        self.skip_shift = False  # a $skip past 0 serves from one line further on (one before it deleted)
        self._pages_started = 0
        self.repeat_boundary_entry = False  # a page starts with the previous page's last item
        self.leak_drafts = False  # draft lines served as posted entries
        self.corrupt: str | None = None  # malformed_json | non_numeric_amount | unknown_account | missing_field
        self._book_while_paging: tuple[int, int] | None = None
        self._pages_served = 0
        self.self_loop_next_page = False  # every page's nextPage is the page's own URL
        self.endless_pages = False  # nextPage always leads on, to pages of ever new items
        self.huge_page_mb: int | None = None  # entries pages padded to this many MiB of valid JSON
        self.gzip_bomb_mb: int | None = None  # entries pages gzip-encoded, inflating to this many MiB
        # Transport (every response)
        self.latency = 0.0  # seconds added to every request: an API far away (real ones take ~250 ms)
        self.drip_bytes_per_second: float | None = None  # the body is sent a byte at a time
        self.truncate_body = False  # Content-Length promises more than is sent, then the close

    def rate_limit(self, n: int, retry_after: float | None = 1) -> None:
        """The next n requests get 429, with this Retry-After (None: without the header)."""
        with self._lock:
            self._rate_limited, self._retry_after = n, retry_after

    def server_errors(self, n: int, status: int = 503) -> None:
        """The next n requests get this 5xx status."""
        with self._lock:
            self._server_errors, self._server_status = n, status

    @property
    def book_while_paging(self) -> tuple[int, int] | None:
        """(after, count): once the after-th entries page is served, count entries are booked
        (where and how is the emulator's). Fires once."""
        return self._book_while_paging

    @book_while_paging.setter
    def book_while_paging(self, value: tuple[int, int] | None) -> None:
        with self._lock:
            self._book_while_paging, self._pages_served = value, 0

    def check(self) -> Refusal | None:
        """The refusal this request must get, if any (consuming a counted fault)."""
        if self.revoked:
            return Refusal(401, "revoked", {})
        if self.forbidden:
            return Refusal(403, "forbidden", {})
        if self.retry_after_seconds is not None:
            return Refusal(429, "rate_limited", {"Retry-After": str(self.retry_after_seconds)})
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                headers = {} if self._retry_after is None else {"Retry-After": str(self._retry_after)}
                return Refusal(429, "rate_limited", headers)
            if self._server_errors > 0:
                self._server_errors -= 1
                return Refusal(self._server_status, "server_error", {})
        return None

    def once(self, name: str) -> Any:
        """The value of one-shot switch `name` if it is set and has not acted since it was set
        (it acts now), else None."""
        with self._lock:
            value = getattr(self, name)
            if value is None or name in self._fired:
                return None
            self._fired.add(name)
            return value

    def page_wait(self, first_key: int | None = None) -> None:
        """Waits `page_delay` before an entries page, past the first `page_delay_after`, and
        where `page_delay_above` is set only if the page starts above that key: key ranges fetched
        side by side reach the server in any order, but the lowest must come at once."""
        with self._lock:
            self._pages_started += 1
            late = self._pages_started > self.page_delay_after
        if self.page_delay_above is not None:
            late = late and first_key is not None and first_key > self.page_delay_above
        if self.page_delay and late:
            time.sleep(self.page_delay)

    def page_served(self) -> int:
        """Counts an entries page; returns how many entries to book now (0 mostly)."""
        with self._lock:
            if self._book_while_paging is None:
                return 0
            self._pages_served += 1
            after, count = self._book_while_paging
            if self._pages_served != after:
                return 0
            self._book_while_paging = None  # once
            return count


# ---------------------------------------------------------------------------------------------------
# Hostile bodies, made cheaply.
_SPACES = b" " * MIB


@functools.cache
def _deflated_spaces() -> bytes:
    """1 MiB of spaces as raw deflate blocks that refer to nothing before them and end byte-aligned
    (a full flush): copies of it can be laid end to end in one deflate stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(_SPACES) + compressor.flush(zlib.Z_FULL_FLUSH)


@functools.lru_cache(maxsize=16)
def _spaces_crc(mib: int) -> int:
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(_SPACES, crc)
    return crc


def gzip_bomb(size: int, tail: bytes = b"") -> tuple[list[bytes], int]:
    """A gzip member that inflates to exactly max(size, len(tail)) bytes, spaces and then `tail`,
    as (pieces, total length). JSON allows leading whitespace, so with a JSON text as tail it
    inflates to valid JSON. About a thousandth of `size` compressed; no more than 1 MiB is ever
    compressed per call (the copies of one compressed MiB are shared)."""
    spaces = max(0, size - len(tail))
    full, rest = divmod(spaces, MIB)
    last_plain = _SPACES[:rest] + tail
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = compressor.compress(last_plain) + compressor.flush()
    crc = zlib.crc32(last_plain, _spaces_crc(full))
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, best compression
    trailer = struct.pack("<II", crc, (spaces + len(tail)) & 0xFFFFFFFF)
    pieces = [header, *([_deflated_spaces()] * full), last, trailer]
    return pieces, sum(map(len, pieces))


def padded_json(body: bytes, size: int) -> tuple[Iterable[bytes], int]:
    """A JSON text grown to `size` bytes with whitespace (the same JSON value), as (pieces, total
    length): inside an object, before its closing brace, so a parser must read it all; sent in
    1 MiB pieces, never held whole."""
    pad = max(0, size - len(body))
    head, tail = (body[:-1], b"}") if body.endswith(b"}") else (body, b"")

    def pieces() -> Iterator[bytes]:
        yield head
        full, rest = divmod(pad, MIB)
        for _ in range(full):
            yield _SPACES
        yield _SPACES[:rest] + tail

    return pieces(), len(body) + pad
