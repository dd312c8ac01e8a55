"""Input at the edges gets problem+json naming the field, never a 500 (issue 25).

Integers beyond what a column holds, invalid JSON, bodies over the limit and
null in a PATCH field that cannot be empty, on the app every service starts from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Path
from pydantic import BaseModel, ConfigDict, Field

from casebridge_shared.pagination import PageDep
from casebridge_shared.params import JSON_INT_MAX, BigIndex, Int32Id, Omittable
from casebridge_shared.problems import PROBLEM_CONTENT_TYPE
from casebridge_shared.web import create_app, lifespan_noop

HUGE = "99999999999999999999"  # beyond 64 bits


class Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Omittable[Annotated[str, Field(min_length=1, max_length=20)]] = None
    note: str | None = None


def _app() -> FastAPI:
    app = create_app(
        service="edge-test",
        title="t",
        description="t",
        version="1",
        lifespan=lifespan_noop,
        max_body_bytes=100,
    )

    @app.get("/items")
    async def items(page: PageDep) -> dict[str, int]:
        return {"limit": page.limit, "offset": page.offset}

    @app.get("/rows/{row_id}")
    async def row(row_id: Int32Id) -> dict[str, int]:
        return {"id": row_id}

    @app.get("/entries/{index}")
    async def entry(index: Annotated[BigIndex, Path()]) -> dict[str, int]:
        return {"index": index}

    @app.patch("/things")
    async def change(body: Change) -> dict[str, Any]:
        return body.model_dump(exclude_unset=True)

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://edge") as c:
        yield c


def _problem(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = r.json()
    assert body["instance"] == r.request.url.path
    assert body["errors"][0]["field"] == field, body
    return body


async def test_integers_beyond_what_a_column_holds_are_a_422_naming_the_parameter(
    client: httpx.AsyncClient,
) -> None:
    _problem(await client.get(f"/items?offset={HUGE}"), 422, "query.offset")
    _problem(await client.get(f"/items?offset={JSON_INT_MAX + 1}"), 422, "query.offset")
    assert (await client.get(f"/items?offset={JSON_INT_MAX}")).json()["offset"] == JSON_INT_MAX
    _problem(await client.get(f"/rows/{HUGE}"), 422, "path.row_id")
    _problem(await client.get(f"/rows/{2**31}"), 422, "path.row_id")
    assert (await client.get(f"/rows/{2**31 - 1}")).status_code == 200
    _problem(await client.get(f"/entries/{HUGE}"), 422, "path.index")


async def test_the_openapi_documents_the_bounds(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    offset = next(p for p in paths["/items"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] == JSON_INT_MAX
    (row_id,) = paths["/rows/{row_id}"]["get"]["parameters"]
    assert row_id["schema"]["maximum"] == 2**31 - 1


async def test_invalid_json_names_the_body_and_says_where(client: httpx.AsyncClient) -> None:
    bad = b'{"title": "a",, }'
    r = await client.patch("/things", content=bad, headers={"content-type": "application/json"})
    body = _problem(r, 422, "body")
    assert "not valid JSON at character 14" in body["detail"], body


async def test_a_body_over_the_limit_is_a_413_with_its_instance(client: httpx.AsyncClient) -> None:
    declared = await client.patch("/things", json={"note": "x" * 200})
    _problem(declared, 413, "body")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b'{"note": "'
        yield b"x" * 200
        yield b'"}'

    streamed = await client.patch("/things", content=chunks(), headers={"content-type": "application/json"})
    _problem(streamed, 413, "body")


async def test_null_in_a_patch_field_that_cannot_be_empty_is_a_422(client: httpx.AsyncClient) -> None:
    body = _problem(await client.patch("/things", json={"title": None}), 422, "body.title")
    assert "not null" in body["detail"]
    # Left out, it keeps its value; a field that may be empty takes null.
    assert (await client.patch("/things", json={"note": None})).json() == {"note": None}
    assert (await client.patch("/things", json={"title": "ok"})).json() == {"title": "ok"}
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["Change"]
    assert schema["properties"]["title"]["type"] == "string"  # not nullable
    assert "anyOf" in schema["properties"]["note"]
