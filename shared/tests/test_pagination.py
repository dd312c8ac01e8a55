"""Keyset pagination: cursors that refuse edits and foreign lists, a walk that sees each row once
while rows are added, and the Link header (on SQLite, or PostgreSQL when the suite runs on it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query, Request, Response
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import make_url

from casebridge_shared.db import Database, UTCDateTime
from casebridge_shared.pagination import (
    CursorPage,
    CursorPageDep,
    KeyPart,
    Keyset,
    PageParams,
    decode_cursor,
    encode_cursor,
    set_page_links,
)
from casebridge_shared.problems import Problem, Unprocessable, install_problem_handlers
from casebridge_shared.testing import pg_exec, postgres_url

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
NEWEST_FIRST = Keyset(KeyPart(things.c.created_at, datetime, descending=True), KeyPart(things.c.id, str))
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    base = postgres_url()
    if base is None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'pages.sqlite3'}"
    else:
        name = f"cbt_pages_{uuid.uuid4().hex[:12]}"
        await pg_exec(base, f'CREATE DATABASE "{name}"')
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    async with database.write_session() as session:
        await session.run_sync(lambda s: metadata.create_all(s.connection()))
        await session.commit()
    yield database
    await database.dispose()
    if base is not None:
        await pg_exec(base, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


async def _add(db: Database, rows: list[tuple[str, str, datetime]]) -> None:
    async with db.write_session() as session:
        await session.execute(insert(things), [{"id": i, "kind": k, "created_at": at} for i, k, at in rows])
        await session.commit()


async def _page(db: Database, page: PageParams, kind: str | None = None) -> tuple[list[Any], str | None]:
    query = select(things)
    if kind is not None:
        query = query.where(things.c.kind == kind)
    async with db.session() as session:
        rows = list((await session.execute(NEWEST_FIRST.window(query, page))).all())
    return NEWEST_FIRST.cut(rows, page, lambda r: (r.created_at, r.id))


def _refused(problem: Problem) -> None:
    assert isinstance(problem, Unprocessable) and problem.field == "query.cursor"


# --- the cursor --------------------------------------------------------------------------------


def test_a_cursor_carries_its_key_and_is_opaque_url_safe_text() -> None:
    cursor = encode_cursor("/things?kind=a", [T0, "id-1", 7])
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert decode_cursor("/things?kind=a", cursor) == [T0.isoformat(), "id-1", 7]


@pytest.mark.parametrize(
    "cursor",
    ["", "nodot", ".", "abc.", ".abc", "!!!.???", "a.b.c", "eyJ2IjoxfQ.AAAA", "x" * 40 + "." + "y" * 22],
)
def test_a_malformed_cursor_is_refused_naming_the_parameter(cursor: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        decode_cursor("/things?", cursor)
    _refused(refused.value)


def test_an_edited_cursor_or_one_of_another_list_filter_or_sort_is_refused() -> None:
    cursor = encode_cursor("/things?kind=a", [T0.isoformat(), "id-1"])
    digest = cursor.partition(".")[2]
    edited = encode_cursor("/things?kind=a", [T0.isoformat(), "id-2"]).partition(".")[0] + "." + digest
    for scope, text in [
        ("/things?kind=a", edited),
        ("/things?kind=b", cursor),
        ("/others?kind=a", cursor),
        ("/things?kind=a&sort=created_at", cursor),
    ]:
        with pytest.raises(Unprocessable) as refused:
            decode_cursor(scope, text)
        _refused(refused.value)
    # Characters base64 would skip, and padding, are edits too.
    for text in (cursor[:5] + "!" + cursor[5:], cursor[:5] + "\n" + cursor[5:], cursor + "=="):
        with pytest.raises(Unprocessable):
            decode_cursor("/things?kind=a", text)
    assert decode_cursor("/things?kind=a", cursor)  # the untouched one still reads


@pytest.mark.parametrize(
    "key",
    [
        ["2026-12-01T09:00:00", "id"],  # naive: the UTC columns refuse it
        ["yesterday", "id"],
        [T0.isoformat()],  # too few
        [T0.isoformat(), "id", "extra"],
        [T0.isoformat(), 5],
        [T0.isoformat(), "x" * 201],
        [True, "id"],
    ],
)
def test_a_cursor_that_does_not_fit_the_sort_key_is_refused(key: list[Any]) -> None:
    page = PageParams(limit=5, after=key)
    with pytest.raises(Unprocessable) as refused:
        NEWEST_FIRST.typed_after(page)
    _refused(refused.value)


def test_integer_keys_are_bounded_and_not_booleans() -> None:
    by_number = Keyset(KeyPart(things.c.id, int))
    assert by_number.typed_after(PageParams(limit=1, after=[2**53 - 1])) == [2**53 - 1]
    for bad in (2**53, True, "1", 1.5):
        with pytest.raises(Unprocessable):
            by_number.typed_after(PageParams(limit=1, after=[bad]))


# --- the keyset query --------------------------------------------------------------------------


async def test_walking_by_cursor_returns_every_row_once_while_rows_are_added(db: Database) -> None:
    # Ties on created_at (three rows a moment) are where a key without its tie-breaker skips or repeats.
    await _add(db, [(f"r{n:02}", "a", T0 + timedelta(minutes=n // 3)) for n in range(20)])
    seen: list[str] = []
    page = PageParams(limit=3, scope="/things?")
    added = 0
    while True:
        rows, cursor = await _page(db, page)
        seen += [r.id for r in rows]
        # Someone adds rows while the reader walks: newer ones (ahead of the reader, where an
        # offset would shift every later page by one) and ones with a time already passed.
        added += 1
        await _add(
            db,
            [
                (f"new{added:02}", "a", T0 + timedelta(hours=1, minutes=added)),
                (f"late{added:02}", "a", T0 + timedelta(minutes=3)),
            ],
        )
        if cursor is None:
            break
        page = PageParams(limit=3, after=decode_cursor("/things?", cursor), scope="/things?")
    originals = [f"r{n:02}" for n in range(20)]
    assert [s for s in seen if s.startswith("r")] == sorted(
        originals, key=lambda i: (-(int(i[1:]) // 3), i)
    )  # each original once, newest first, ties by id
    assert len(seen) == len(set(seen))


async def test_offset_pages_keep_their_meaning_and_give_a_cursor_onwards(db: Database) -> None:
    await _add(db, [(f"r{n:02}", "a", T0 + timedelta(minutes=n)) for n in range(5)])
    rows, cursor = await _page(db, PageParams(limit=2, offset=2, scope="/things?"))
    assert [r.id for r in rows] == ["r02", "r01"] and cursor is not None
    rows, cursor = await _page(db, PageParams(limit=2, after=decode_cursor("/things?", cursor)))
    assert [r.id for r in rows] == ["r00"] and cursor is None
    rows, cursor = await _page(db, PageParams(limit=2, offset=9))
    assert rows == [] and cursor is None


async def test_a_cursor_walk_keeps_to_the_filter(db: Database) -> None:
    await _add(db, [(f"r{n:02}", "ab"[n % 2], T0 + timedelta(minutes=n)) for n in range(9)])
    seen: list[str] = []
    page = PageParams(limit=2, scope="/things?kind=b")
    while True:
        rows, cursor = await _page(db, page, kind="b")
        seen += [r.id for r in rows]
        if cursor is None:
            break
        page = PageParams(limit=2, after=decode_cursor("/things?kind=b", cursor), scope=page.scope)
    assert seen == ["r07", "r05", "r03", "r01"]
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(things))).scalar_one() == 9


# --- the request side: CursorPageDep and the Link header ---------------------------------------------


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/things", response_model=CursorPage[dict[str, Any]])
    async def list_things(
        page: CursorPageDep, request: Request, response: Response, kind: Annotated[str | None, Query()] = None
    ) -> CursorPage[dict[str, Any]]:
        rows, cursor = await _page(db, page, kind)
        set_page_links(request, response, cursor)
        return CursorPage[dict[str, Any]](
            items=[{"id": r.id} for r in rows],
            total=0,
            limit=page.limit,
            offset=page.offset,
            next_cursor=cursor,
        )

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_next_links_walk_the_list_with_its_filters(db: Database, client: httpx.AsyncClient) -> None:
    await _add(db, [(f"r{n:02}", "ab"[n % 2], T0 + timedelta(minutes=n)) for n in range(7)])
    r = await client.get("/things", params={"kind": "a", "limit": 2})
    assert r.links["first"]["url"] == "/things?kind=a&limit=2"
    seen = [i["id"] for i in r.json()["items"]]
    while "next" in r.links:
        assert r.json()["next_cursor"] in r.links["next"]["url"]
        r = await client.get(r.links["next"]["url"])
        assert r.status_code == 200, r.text
        seen += [i["id"] for i in r.json()["items"]]
    assert seen == ["r06", "r04", "r02", "r00"]
    assert r.json()["next_cursor"] is None and set(r.links) == {"first"}


async def test_bad_paging_parameters_are_problems_naming_the_field(
    db: Database, client: httpx.AsyncClient
) -> None:
    await _add(db, [(f"r{n:02}", "a", T0 + timedelta(minutes=n)) for n in range(3)])
    cursor = (await client.get("/things", params={"kind": "a", "limit": 1})).json()["next_cursor"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cursor": "garbage"}, "query.cursor"),
        ({"cursor": cursor}, "query.cursor"),  # made for kind=a
        ({"kind": "b", "cursor": cursor}, "query.cursor"),
        ({"kind": "a", "cursor": cursor, "offset": 1}, "query.offset"),
        ({"cursor": "x" * 1001}, "query.cursor"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 201}, "query.limit"),
        ({"offset": -1}, "query.offset"),
    ]
    for params, field in cases:
        r = await client.get("/things", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == field, (params, r.json())
    r = await client.get("/things", params={"kind": "a", "limit": 1, "cursor": cursor})
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == ["r01"]
