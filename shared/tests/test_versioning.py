"""The If-Match dependencies on a bare app: what each tag means, 428 and 412 as problem+json,
and the OpenAPI declaring the header required only where the server requires it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.problems import PreconditionFailed, install_problem_handlers
from casebridge_shared.versioning import (
    IfMatch,
    IfMatchRequired,
    check_version,
    not_modified,
    parse_entity_tag,
)

PROBLEM = "application/problem+json"
CURRENT = 3


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app)

    @app.put("/required")
    async def put_required(version: IfMatchRequired) -> dict[str, int | None]:
        check_version(CURRENT, version)
        return {"version": version}

    @app.put("/optional")
    async def put_optional(version: IfMatch) -> dict[str, int | None]:
        check_version(CURRENT, version)
        return {"version": version}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.mark.parametrize(("tag", "version"), [('"3"', 3), ('W/"3"', 3), ("3", 3), (' "3" ', 3), ("*", None)])
async def test_the_tags_that_name_a_version(client: httpx.AsyncClient, tag: str, version: int | None) -> None:
    for path in ("/required", "/optional"):
        r = await client.put(path, headers={"If-Match": tag})
        assert r.status_code == 200 and r.json() == {"version": version}, (path, tag, r.text)


@pytest.mark.parametrize(
    "tag", ['"2"', '"abc"', "W/", '"', '"3", "4"', '"-3"', '"+3"', '"99999999999999999999"']
)
async def test_a_stale_or_foreign_tag_is_412(client: httpx.AsyncClient, tag: str) -> None:
    for path in ("/required", "/optional"):
        r = await client.put(path, headers={"If-Match": tag})
        assert r.status_code == 412 and r.headers["content-type"] == PROBLEM, (path, tag, r.text)
        assert r.json()["errors"][0]["field"] == "header.If-Match"


async def test_left_out_it_is_428_where_required_and_no_check_elsewhere(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"If-Match": ""}):
        r = await client.put("/required", headers=headers)
        assert r.status_code == 428 and r.headers["content-type"] == PROBLEM, r.text
        assert r.json()["title"] == "If-Match header required"
        assert (await client.put("/optional", headers=headers)).json() == {"version": None}


async def test_the_openapi_says_where_it_is_required(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    required = {path: [p for p in paths[path]["put"]["parameters"] if p["in"] == "header"] for path in paths}
    assert [(p["name"], p["required"]) for p in required["/required"]] == [("If-Match", True)]
    assert [(p["name"], p["required"]) for p in required["/optional"]] == [("If-Match", False)]


def test_only_ascii_digits_name_a_version() -> None:
    # int() would read other scripts' digits ("٣" is 3): no ETag of ours looks like that.
    with pytest.raises(PreconditionFailed):
        parse_entity_tag('"\u0663"')
    assert parse_entity_tag('"3"') == 3


@pytest.mark.parametrize(
    ("if_none_match", "answered"),
    [
        ('"3"', 304),
        ('W/"3"', 304),
        ('"1", "3"', 304),
        ("*", 304),
        ('"2"', None),
        ("3", None),  # If-None-Match takes quoted tags only: a bare number names none
        ('"x"', None),
        (None, None),
    ],
)
def test_not_modified_when_the_copy_is_current(if_none_match: str | None, answered: int | None) -> None:
    response = not_modified(if_none_match, CURRENT)
    if answered is None:
        assert response is None
    else:
        assert response is not None
        assert response.status_code == answered and response.headers["ETag"] == '"3"'
        assert response.body == b""
