"""Pagination, the same shape on every list endpoint: offset with a total, and keyset cursors.

A list answers ``Page[T]`` (items, total, limit, offset) or, when it also pages by key,
``CursorPage[T]`` (the same and ``next_cursor``) and a ``Link``
header (RFC 8288) with ``rel="first"`` and, while more items follow, ``rel="next"``.
Offset paging (``?offset=``) is kept for the screens and existing clients. A cursor
(``?cursor=`` taken from ``next_cursor`` or the ``next`` link) continues *after the last
item seen*, by its sort key, rather than after a count of items: an item added or
removed ahead of the reader no longer shifts every later page, so a walk returns each
item that was there once, and a deep page costs an index seek, not a skip.

The pieces, used together by a list:

- :data:`CursorPageDep` reads ``limit``, ``offset`` and ``cursor`` and checks the cursor
  belongs to this list and these filters (422 naming ``query.cursor`` otherwise);
  :data:`PageDep` is offset paging alone, for the lists not paged by key;
- :class:`Keyset` orders a SQLAlchemy query by its key (sort columns, then a unique
  tie-breaker), cuts it after the cursor (or skips the offset) and, from the rows, makes
  the page and its ``next_cursor``;
- :func:`set_page_links` writes the ``Link`` header, keeping the request's filters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import and_, false, or_
from sqlalchemy.sql import Select

from casebridge_shared.params import JSON_INT_MAX, BigIndex
from casebridge_shared.problems import Unprocessable

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound=Select[Any])

CURSOR_FIELD = "query.cursor"
# Parameters that choose the page rather than the items: everything else in the query
# (filters, sort) is part of what a cursor is bound to and is kept in the links.
PAGING_PARAMETERS = frozenset({"cursor", "offset", "limit"})
CURSOR_MAX_LENGTH = 1000
_CURSOR_VERSION = 1
_CURSOR_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# 128 bits: no accidental or hand-made edit of a cursor goes unnoticed by chance.
_DIGEST_BYTES = 16
_KEY_TEXT_MAX = 200
# Not a secret: the check value binds a cursor to its list and filters and catches any
# edit. It need not keep anyone out, since every page applies the caller's own rights and
# filters again, and a cursor holds only sort values the caller was shown (decision in
# docs/adr/0047-keyset-pagination.md). The key only separates it from other SHA-256 uses.
_DIGEST_KEY = b"casebridge-pagination-cursor-v1"


class PageParams(BaseModel):
    """The page asked for. ``after``: the sort key values a cursor continues after."""

    limit: int
    offset: int = 0
    after: list[Any] | None = None
    # What the cursor is bound to (path and filters), for the next cursor of this page.
    scope: str = ""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(scope: str, payload: bytes) -> bytes:
    mac = hmac.new(_DIGEST_KEY, scope.encode() + b"\x00" + payload, hashlib.sha256)
    return mac.digest()[:_DIGEST_BYTES]


def scope_of(request: Request) -> str:
    """The list (path) and filters (query other than paging) a cursor of this request is bound to.

    Sorted, so the same filters in another order are the same list; ``sort`` is a filter
    here, so a cursor of one sort order is refused under another (its key means nothing there).
    """
    filters = sorted((k, v) for k, v in request.query_params.multi_items() if k not in PAGING_PARAMETERS)
    return request.url.path + "?" + urlencode(filters)


def encode_cursor(scope: str, key: Sequence[Any]) -> str:
    """An opaque cursor for the item whose sort key is ``key``, bound to ``scope``."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    payload = json.dumps({"v": _CURSOR_VERSION, "k": values}, separators=(",", ":")).encode()
    return f"{_b64encode(payload)}.{_b64encode(_digest(scope, payload))}"


def decode_cursor(scope: str, cursor: str) -> list[Any]:
    """The key values of ``cursor``; 422 naming ``query.cursor`` when it is malformed,
    edited, or made for another list, filters or sort order."""
    refused = Unprocessable(
        "The cursor is not one this list gave for these filters: start again without it.",
        field=CURSOR_FIELD,
    )
    # Checked before decoding: base64 decoders skip characters outside the alphabet, so an
    # edited cursor could otherwise decode to the original.
    if not _CURSOR_SHAPE.fullmatch(cursor):
        raise refused
    payload_text, _, digest_text = cursor.partition(".")
    try:
        payload = _b64decode(payload_text)
        digest = _b64decode(digest_text)
    except (binascii.Error, ValueError) as exc:
        raise refused from exc
    if not hmac.compare_digest(digest, _digest(scope, payload)):
        raise refused
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise refused from exc
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION or not isinstance(body.get("k"), list):
        raise refused
    values: list[Any] = body["k"]
    return values


Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]


async def _page_params(
    limit: Limit = 50,
    offset: Annotated[BigIndex, Query(description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(_page_params)]
"""Offset paging only: the lists not (yet) paged by key."""


async def _cursor_page_params(
    request: Request,
    limit: Limit = 50,
    offset: Annotated[BigIndex, Query(description="Items to skip (not with `cursor`)")] = 0,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=CURSOR_MAX_LENGTH,
            description="Continue after the last item of a page: its `next_cursor` (or the "
            '`rel="next"` link). Send the same filters and sort with it',
        ),
    ] = None,
) -> PageParams:
    scope = scope_of(request)
    if cursor is None:
        return PageParams(limit=limit, offset=offset, scope=scope)
    if offset:
        # Both would name a start: refuse rather than silently prefer one.
        raise Unprocessable("Send either a cursor or an offset, not both.", field="query.offset")
    return PageParams(limit=limit, after=decode_cursor(scope, cursor), scope=scope)


CursorPageDep = Annotated[PageParams, Depends(_cursor_page_params)]
"""Offset or cursor paging, for a list served through a :class:`Keyset` (and :func:`set_page_links`)."""


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class CursorPage(Page[T], Generic[T]):
    """A page of a list that also pages by cursor (:data:`CursorPageDep`)."""

    next_cursor: str | None = Field(
        default=None,
        description="Send as `cursor` (with the same filters) for the items after these; "
        "null on the last page",
    )


@dataclass(frozen=True)
class KeyPart:
    """One column (or SQL expression) of a sort key, the Python type of its values, its direction."""

    expression: Any
    kind: type[datetime] | type[str] | type[int]
    descending: bool = False


def _typed(value: Any, kind: type[datetime] | type[str] | type[int]) -> Any:
    """A cursor's JSON value as ``kind``, or ``None`` when it is not one (bounded, aware)."""
    if kind is datetime:
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else None
    if kind is int:
        # bool is an int to Python, not to a cursor; the bound keeps SQL integers from overflowing.
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= JSON_INT_MAX
        return value if ok else None
    return value if isinstance(value, str) and len(value) <= _KEY_TEXT_MAX else None


class Keyset:
    """A list's sort key: sort parts, the last of them unique (the tie-breaker, usually ``id``).

    Rows compare by the whole key, so items with the same sort value (orders placed in
    the same microsecond) are neither skipped nor repeated at a page boundary.
    """

    def __init__(self, *parts: KeyPart) -> None:
        if not parts:
            raise ValueError("a keyset needs at least its unique tie-breaker")
        self.parts = parts

    def order_by(self) -> list[Any]:
        return [p.expression.desc() if p.descending else p.expression.asc() for p in self.parts]

    def after(self, values: Sequence[Any]) -> Any:
        """Rows strictly after ``values`` in key order.

        Spelled out as ``a > x OR (a = x AND b > y) ...`` rather than a row-value
        comparison, which neither mixes directions (newest first, then id) nor works the
        same on SQLite and PostgreSQL.
        """
        clauses = []
        for i, part in enumerate(self.parts):
            equal = [p.expression == v for p, v in zip(self.parts[:i], values, strict=False)]
            beyond = part.expression < values[i] if part.descending else part.expression > values[i]
            clauses.append(and_(*equal, beyond))
        return or_(false(), *clauses)

    def typed_after(self, page: PageParams) -> list[Any] | None:
        """The cursor's values as this key's types; 422 naming ``query.cursor`` when they do not fit."""
        if page.after is None:
            return None
        typed = [_typed(v, p.kind) for v, p in zip(page.after, self.parts, strict=False)]
        if len(page.after) != len(self.parts) or any(v is None for v in typed):
            raise Unprocessable("The cursor does not fit this list's sort order.", field=CURSOR_FIELD)
        return typed

    def window(self, query: S, page: PageParams) -> S:
        """``query`` in key order from the page's start, one row more than the page (to know
        whether another follows)."""
        after = self.typed_after(page)
        query = query.order_by(*self.order_by()).limit(page.limit + 1)
        if after is not None:
            return query.where(self.after(after))
        return query.offset(page.offset) if page.offset else query

    def cut(
        self, rows: Sequence[R], page: PageParams, key_of: Callable[[R], Sequence[Any]]
    ) -> tuple[list[R], str | None]:
        """The page's rows (of a :meth:`window` query) and the cursor of the rows after them."""
        items = list(rows[: page.limit])
        if len(rows) <= page.limit or not items:
            return items, None
        return items, encode_cursor(page.scope, key_of(items[-1]))


def set_page_links(request: Request, response: Response, next_cursor: str | None) -> None:
    """``Link: <first>; rel="first", <next>; rel="next"``, each with the request's filters and limit.

    Relative references (RFC 8288 resolves them against the request), like ``Location``:
    right behind any proxy that keeps the path.
    """
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in {"cursor", "offset"}]
    path = request.url.path
    links = [f'<{path}{"?" + urlencode(kept) if kept else ""}>; rel="first"']
    if next_cursor is not None:
        links.append(f'<{path}?{urlencode([*kept, ("cursor", next_cursor)])}>; rel="next"')
    response.headers["Link"] = ", ".join(links)
