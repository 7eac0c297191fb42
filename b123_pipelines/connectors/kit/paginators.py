"""How to find the next page, one class per scheme (after dlt's REST client paginators).

A paginator only reads responses and says where the next page is; the client sends the requests
and enforces the bounds every fetch has: a page asked for twice is a loop, and a source that keeps
sending pages beyond what it announced is stopped before the extra page is handed on (so nothing
past the last good page is ever committed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlsplit

from b123_pipelines.connectors.kit.transport import Transport, TransportError, path_of

Body = Any
Request = tuple[str, dict | None]  # (path or absolute URL, query parameters)


class Paginator:
    """Where the items are in a page, where the next page is, and how many pages were announced."""

    items_key: str = "value"

    def first(self, path: str, params: dict | None) -> Request:
        return path, params

    def items(self, body: Body) -> list:
        try:
            items = body[self.items_key]
        except (KeyError, TypeError):
            raise TransportError(f"answered without its list of records ('{self.items_key}')", temporary=False) from None
        if not isinstance(items, list):
            raise TransportError(f"answered with '{self.items_key}' that is not a list", temporary=False)
        return items

    def next(self, request: Request, body: Body, items: list) -> Request | None:
        raise NotImplementedError

    def announced(self, body: Body) -> int | None:
        """Records the source says the whole fetch has, where it says so."""
        return None

    def announced_pages(self, body: Body) -> int | None:
        return None


@dataclass
class NextLink(Paginator):
    """Follows a link the source puts in each page (e-conomic's `pagination.nextPage`, OData's
    `@odata.nextLink` with its `$skiptoken`), unchanged, until a page has none."""

    items_key: str = "value"
    link: Callable[[Body], str | None] = lambda body: body.get("@odata.nextLink")
    total: Callable[[Body], int | None] = lambda body: None  # records announced, if the source says
    page_size: int | None = None

    def next(self, request: Request, body: Body, items: list) -> Request | None:
        link = self.link(body)
        return (link, None) if link else None

    def announced(self, body: Body) -> int | None:
        total = self.total(body)
        return None if total is None else int(total)

    def announced_pages(self, body: Body) -> int | None:
        total = self.announced(body)
        if total is None or not self.page_size:
            return None
        return max(1, math.ceil(total / self.page_size))


@dataclass
class Keyset(Paginator):
    """`$filter key gt last`, `$orderby key`, `$top n`: resumable anywhere, immune to inserts."""

    key: str
    page_size: int = 1000
    after: Any = None  # start after this key value (None: from the first)
    where: str | None = None  # a filter every page keeps
    quote: Callable[[Any], str] = str

    def first(self, path: str, params: dict | None) -> Request:
        return path, self._params(params, self.after)

    def next(self, request: Request, body: Body, items: list) -> Request | None:
        if len(items) < self.page_size:
            return None
        return request[0], self._params(request[1], items[-1][self.key])

    def _params(self, params: dict | None, after: Any) -> dict:
        terms = [t for t in (self.where, None if after is None else f"{self.key} gt {self.quote(after)}") if t]
        query = {k: v for k, v in (params or {}).items() if k not in ("$filter", "$orderby", "$top")}
        return {**query, **({"$filter": " and ".join(terms)} if terms else {}),
                "$orderby": self.key, "$top": str(self.page_size)}


@dataclass
class SkipTop(Paginator):
    """`$skip` and `$top`, for sources that offer nothing better."""

    page_size: int = 1000

    def first(self, path: str, params: dict | None) -> Request:
        return path, {**(params or {}), "$skip": "0", "$top": str(self.page_size)}

    def next(self, request: Request, body: Body, items: list) -> Request | None:
        if len(items) < self.page_size:
            return None
        params = dict(request[1] or {})
        params["$skip"] = str(int(params["$skip"]) + self.page_size)
        return request[0], params


class PageLoop(TransportError):
    pass


def pages(transport: Transport, paginator: Paginator, path: str, params: dict | None = None,
          decode: Callable[[bytes], Body] | None = None) -> Iterator[tuple[list, Body]]:
    """Every page of one fetch, as (items, body), within the bounds above; `decode`: the
    transport's typed decoder for these pages, if any."""
    request: Request | None = paginator.first(path, params)
    seen: set[tuple] = set()
    pages_announced = records_announced = None
    page = records = 0
    while request is not None:
        identity = _identity(transport.url(request[0]), request[1])
        if identity in seen:
            raise PageLoop(f"sent budget123 back to a page it had already read ({path_of(request[0])}), "
                           "so the fetch would never end", temporary=False)
        seen.add(identity)
        page += 1
        body, _ = transport.get_json(*request, decode=decode)
        items = paginator.items(body)
        records += len(items)
        # A source may announce more as it goes (entries booked while we page), never fewer.
        pages_announced = _most(pages_announced, paginator.announced_pages(body))
        records_announced = _most(records_announced, paginator.announced(body))
        if (pages_announced is not None and page > pages_announced) or (
                records_announced is not None and records > records_announced):
            raise PageLoop(f"kept sending pages for {path_of(request[0])}: page {page} with {records} "
                           f"records in all, though it announced {records_announced} in {pages_announced} "
                           "pages", temporary=False)
        yield items, body
        request = paginator.next(request, body, items)


def _identity(url: str, params: dict | None) -> tuple:
    """One page's address however it is written: the URL's own query and the params together."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, str(v)) for k, v in (params or {}).items()]
    return parts.scheme, parts.netloc, parts.path, tuple(sorted(query))


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
