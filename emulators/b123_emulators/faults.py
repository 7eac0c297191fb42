"""Switchable faults: what an emulator can be told to do wrong, to test a client's resilience.

`Faults` holds the switches, all off by default, and knows no system's shapes. Who acts on them:

- `EmulatorServer.gate()` (server.py), which an emulator calls once a request is authenticated, turns
  `check()` into the error answer: `revoked` (401), `forbidden` (403), `rate_limit(n)` (429),
  `server_errors(n)` (5xx). The wording is the emulator's (`EmulatorServer.refusals`).
- The emulator applies the page faults where its pages are made: `page_delay`, `corrupt`,
  `repeat_boundary_entry`, `leak_drafts`, `book_while_paging` (`page_served()`).

An emulator says in its own docstring which of the page faults it implements.
"""

from __future__ import annotations

import threading
from typing import NamedTuple


class Refusal(NamedTuple):
    """An error answer a fault asks for: the status, the kind (the key of the emulator's wording)
    and headers to send with it."""
    status: int
    kind: str  # revoked | forbidden | rate_limited | server_error
    headers: dict[str, str]


class Faults:
    """Switchable failures. All off by default; counters are consumed one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Refusals (gate)
        self.revoked = False  # 401 on every request
        self.forbidden = False  # 403 on every request
        self._rate_limited, self._retry_after = 0, None
        self._server_errors, self._server_status = 0, 503
        # Pages
        self.page_delay = 0.0  # seconds before each entries page is sent
        self.repeat_boundary_entry = False  # a page starts with the previous page's last item
        self.leak_drafts = False  # draft lines served as posted entries
        self.corrupt: str | None = None  # malformed_json | non_numeric_amount | unknown_account | missing_field
        self._book_while_paging: tuple[int, int] | None = None
        self._pages_served = 0

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
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                headers = {} if self._retry_after is None else {"Retry-After": str(self._retry_after)}
                return Refusal(429, "rate_limited", headers)
            if self._server_errors > 0:
                self._server_errors -= 1
                return Refusal(self._server_status, "server_error", {})
        return None

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

