"""HTTP transport for every REST connector: where credentials may go, how long and how much.

- Credentials go only to the tenant's configured origin: a next link or redirect to another origin
  is refused before anything is sent there, and https is required except on loopback (development
  emulators).
- Every request is bounded: a deadline for the whole response (a server dripping one byte a
  second cannot hold an update), a cap on the decompressed body (a gzip bomb stops at the cap), a
  body shorter than its Content-Length is an error, and retries give up within about a minute. A Retry-After longer than RETRY_AFTER_MAX fails at once, saying when to try again,
  instead of sleeping for a day.
- Retries follow urllib3's `Retry` policy (back-off, Retry-After parsing, which statuses retry),
  driven from here so every attempt passes the tenant's rate limiter and is counted. Only GETs are
  sent, so a retry can never book anything twice.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
import zlib
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import msgspec
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from b123_pipelines.connectors.kit.budget import RateLimiter

# JSON straight from the bytes, numbers with a fraction as exact Decimals: msgspec reads a page
# about three times faster than json.loads with parse_float=Decimal (a first sync of a million
# entries reads a gigabyte of JSON). Its DecodeError is a ValueError.
DECODE = msgspec.json.Decoder(float_hook=Decimal).decode


def typed(shape: type, as_body: Callable[[Any], Any] = msgspec.structs.asdict) -> Callable[[bytes], Any]:
    """A decoder that reads a page of the msgspec Struct `shape` straight into typed records (no
    dict per record, Decimals and dates read in C), handed on as `as_body(page)`. A page that does
    not fit the shape is read as plain JSON instead, so the connector's own mapping names what is
    wrong with it, in its words."""
    fast = msgspec.json.Decoder(shape).decode

    def decode(raw: bytes) -> Any:
        try:
            return as_body(fast(raw))
        except msgspec.ValidationError:
            return DECODE(raw)
    return decode
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CHUNK = 16 * 1024  # compressed bytes read at a time: at most ~16 MB decompressed from one read
MAX_REDIRECTS = 5
MAX_CONNECTIONS = 16  # kept open to one source, however many calls at once its budget allows
RETRY_AFTER_READ_MAX = 366 * 86400  # seconds: the longest Retry-After read as it is


@dataclass(frozen=True)
class HttpTuning:
    timeout: float = 60.0  # seconds without a byte before a connection counts as dead
    connect_timeout: float | None = None  # seconds to connect (TCP and TLS); None: `timeout`
    deadline: float = 300.0  # seconds for one whole response, body included
    retries: int = 6  # back-offs 1, 2, 4, 8, 16, 30 s: a dead server is given up on after ~1 minute
    backoff: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a longer Retry-After fails the update instead of waiting
    max_body_mb: float = 32.0  # decompressed; a page of 1,000 entries is about 0.5 MB

    @classmethod
    def from_dict(cls, values: dict | None) -> "HttpTuning":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})


class TransportError(Exception):
    """What went wrong with a request, for the connector to explain in its system's words."""

    def __init__(self, problem: str, temporary: bool):
        super().__init__(problem)
        self.problem, self.temporary = problem, temporary


class WaitTooLong(TransportError):
    """The source asked for a longer wait than `retry_after_max` (a daily call limit, most likely):
    the update stops at once. `until` is when the source said to call again, `status` its status,
    so a connector can say it in its system's words (Uniconta's daily call limit)."""

    def __init__(self, problem: str, until: dt.datetime, status: int, path: str):
        super().__init__(problem, temporary=True)
        self.until, self.status, self.path = until, status, path


class DailyCallsSpent(TransportError):
    """budget123's share of the day's calls is spent: stop now rather than wait for tomorrow."""

    def __init__(self):
        super().__init__("has no calls left today in budget123's share of the tenant's daily call quota",
                         temporary=True)


class HttpStatusError(Exception):
    def __init__(self, status: int, body: Any, path: str):
        super().__init__(f"HTTP {status} on {path}")
        self.status, self.body, self.path = status, body, path


def origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def https_or_loopback(url: str) -> str:
    """For connection settings: https, or http only to this machine (development emulators)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url.rstrip("/")
    raise ValueError("must be an https:// address (plain http is accepted only for this machine)")


def path_of(url: str) -> str:
    return urlsplit(url).path or "/"


class Transport:
    """One tenant's session with one accounting system's API."""

    def __init__(self, base_url: str, auth: requests.auth.AuthBase | None, tuning: HttpTuning,
                 limiter: RateLimiter, headers: dict[str, str] | None = None):
        self.base_url = https_or_loopback(base_url)
        self.origin = origin(self.base_url)
        self.tuning, self.limiter = tuning, limiter
        self.calls = 0  # attempts this transport sent, retries included
        self._calls_lock = threading.Lock()  # ranges of one stream are fetched from several threads
        self._closed = threading.Event()
        self.allowance: int | None = None  # calls it may send, where the system has a daily quota
        self.http = requests.Session()
        self.http.auth = auth
        self.http.headers.update({"Accept": "application/json", "Accept-Encoding": "gzip, deflate",
                                  **(headers or {})})
        # A connection kept open for each call the budget allows at once (key ranges side by side).
        adapter = HTTPAdapter(max_retries=0, pool_connections=2,
                              pool_maxsize=max(2, min(limiter.budget.concurrent_calls, MAX_CONNECTIONS)))
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)

    def close(self) -> None:
        """Ends the session. A fetch still under way in another thread (a range fetched ahead of
        an update that has ended) stops at its next request instead of paging on."""
        self._closed.set()
        self.http.close()

    def url(self, path_or_url: str) -> str:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        if origin(url) != self.origin:
            raise TransportError(
                f"pointed budget123 to another address ({origin(url)}) for {path_of(url)}; the "
                f"tenant's credentials are only ever sent to {self.origin}, so it was not followed",
                temporary=False)
        return url

    def get_json(self, path_or_url: str, params: dict | None = None,
                 decode: Callable[[bytes], Any] | None = None) -> tuple[Any, str]:
        """The JSON body (numbers as Decimal; a 2xx body through `decode` where given) and the URL
        that answered; raises HttpStatusError for a 4xx/5xx that retries did not cure,
        TransportError for everything else."""
        url = self.url(path_or_url)
        retry = self._policy()
        redirects = 0
        while True:
            self._count_call()
            try:
                with self.limiter:
                    response = self.http.get(url, params=params, timeout=self._timeouts(),
                                             stream=True, allow_redirects=False)
            except requests.RequestException as exc:
                retry = self._again(retry, url, error=exc)
                continue
            with response:
                if response.is_redirect and redirects < MAX_REDIRECTS:
                    url, params, redirects = self.url(urljoin(url, response.headers["Location"])), None, redirects + 1
                    continue
                if response.status_code in RETRY_STATUSES and retry.total:
                    self._refuse_long_wait(retry, response)
                    retry = self._again(retry, url, response=response)
                    continue
                body = self._json(response, url, decode if response.status_code < 300 else None)
            if response.status_code >= 300:
                raise HttpStatusError(response.status_code, body, path_of(url))
            return body, response.url

    def _count_call(self) -> None:
        if self._closed.is_set():
            raise TransportError("was not asked again: the update had ended", temporary=True)
        with self._calls_lock:
            if self.allowance is not None and self.calls >= self.allowance:
                raise DailyCallsSpent()
            self.calls += 1

    def _timeouts(self) -> tuple[float, float]:
        return self.tuning.connect_timeout or self.tuning.timeout, self.tuning.timeout

    def _policy(self) -> Retry:
        t = self.tuning
        policy = Retry(total=t.retries, backoff_factor=t.backoff, backoff_max=t.backoff_max,
                       status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET"}),
                       respect_retry_after_header=True, raise_on_status=False)
        # urllib3 2.6+ cuts a Retry-After down to six hours as it reads it. We never sleep that long
        # (`_refuse_long_wait` stops first), but must read a day's wait whole to say when to call
        # again. (Older urllib3 neither cuts nor knows the attribute.)
        policy.retry_after_max = RETRY_AFTER_READ_MAX
        return policy

    def _again(self, retry: Retry, url: str, response=None, error=None) -> Retry:
        try:
            retry = retry.increment(method="GET", url=url, response=response.raw if response is not None else None,
                                    error=error)
        except MaxRetryError:
            what = f"did not answer ({type(error).__name__})" if error is not None else "kept failing"
            raise TransportError(f"{what} on {path_of(url)}, even after {self.tuning.retries} retries",
                                 temporary=True) from None
        retry.sleep(response.raw if response is not None else None)
        return retry

    def _refuse_long_wait(self, retry: Retry, response: requests.Response) -> None:
        wait = retry.get_retry_after(response.raw)
        if wait is not None and wait > self.tuning.retry_after_max:
            until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=wait)
            raise WaitTooLong(
                f"asked budget123 to wait {_duration(wait)} before calling again (its limit on API "
                f"calls is reached); update again after {until:%Y-%m-%d %H:%M} UTC", until,
                response.status_code, path_of(response.url))

    def _json(self, response: requests.Response, url: str, decode: Callable[[bytes], Any] | None) -> Any:
        raw = self._body(response, url)
        if response.status_code >= 400 and not raw:
            return None
        try:
            return (decode or DECODE)(raw)
        except ValueError:
            if response.status_code >= 400:
                return raw.decode("utf-8", "replace")[:500]
            raise TransportError(f"answered {path_of(url)} with a response that is not valid JSON",
                                 temporary=False) from None

    def _body(self, response: requests.Response, url: str) -> bytes:
        """Reads the body within the deadline and the size cap, decompressing as it goes."""
        cap = int(self.tuning.max_body_mb * 1024 * 1024)
        encoding = response.headers.get("Content-Encoding", "").lower()
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate") else None
        deadline = time.monotonic() + self.tuning.deadline
        parts, size, received = [], 0, 0
        while True:
            if time.monotonic() > deadline:
                raise TransportError(f"took more than {self.tuning.deadline:.0f} s to send {path_of(url)}",
                                     temporary=True)
            try:
                chunk = response.raw.read1(CHUNK, decode_content=False)
            except Exception as exc:  # urllib3/http.client protocol errors: a broken stream
                raise TransportError(f"broke off while sending {path_of(url)} ({type(exc).__name__})",
                                     temporary=True) from None
            if not chunk:
                break
            received += len(chunk)
            data = decoder.decompress(chunk, cap - size + 1) if decoder else chunk
            size += len(data)
            if size > cap or (decoder is not None and decoder.unconsumed_tail):
                raise TransportError(f"sent more than {self.tuning.max_body_mb:.0f} MB for {path_of(url)}; "
                                     "budget123 reads at most that much in one response", temporary=False)
            parts.append(data)
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and received != int(expected):
            raise TransportError(f"broke off while sending {path_of(url)} ({received} of {expected} bytes)",
                                 temporary=True)
        return b"".join(parts)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"


__all__ = ["HttpTuning", "HttpStatusError", "Transport", "TransportError", "WaitTooLong", "https_or_loopback",
           "is_loopback", "origin", "path_of"]
