"""HTTP transport shared by the REST connectors: one pooled session, retries by urllib3's Retry.

Retries are urllib3's, not a hand loop: 429 honours Retry-After when sent and backs off
exponentially when not; 5xx, refused connections and read timeouts back off the same way. Only
GETs are retried, so a retry can never book anything twice.
"""

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpTuning:
    timeout: float = 60.0  # seconds to wait for a page
    retries: int = 8
    backoff: float = 1.0  # first back-off in seconds, doubling per retry
    backoff_max: float = 120.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "HttpTuning":
        return cls(**(values or {}))


def session(tuning: HttpTuning, headers: dict[str, str]) -> requests.Session:
    retry = Retry(
        total=tuning.retries,
        connect=tuning.retries,
        read=tuning.retries,
        status=tuning.retries,
        backoff_factor=tuning.backoff,
        backoff_max=tuning.backoff_max,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the connector turns the last answer into an explained error
    )
    http = requests.Session()
    http.headers.update(headers)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=4)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http
