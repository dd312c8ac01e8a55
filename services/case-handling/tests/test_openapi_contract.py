"""case-handling's OpenAPI against real answers: the response headers it sends are the ones it
documents, and If-Match is declared required exactly where a request without it gets 428."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.testing import TokenMinter
from casebridge_shared.testing.openapi import assert_headers_as_documented

PROBLEM = "application/problem+json"


@pytest.fixture
def spec(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


async def test_the_headers_sent_are_the_documented_ones(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, spec: dict[str, Any]
) -> None:
    case = await factory.case()
    me = minter.headers("staff-1", "staff", name="Staff One", email="staff-1@casebridge.example")
    url = f"/cases/{case.id}"
    assert_headers_as_documented(spec, await client.get(url, headers=me), 200, "ETag")
    claimed = assert_headers_as_documented(spec, await client.post(f"{url}/claim", headers=me), 200, "ETag")
    started = await client.post(f"{url}/start", headers=me | {"If-Match": claimed.headers["ETag"]})
    assert_headers_as_documented(spec, started, 200, "ETag")
    patched = await client.patch(
        url, json={"priority": "high"}, headers=me | {"If-Match": started.headers["ETag"]}
    )
    assert_headers_as_documented(spec, patched, 200, "ETag")

    uploaded = await client.post(
        f"{url}/attachments", headers=me, files={"file": ("notes.txt", b"some notes", "text/plain")}
    )
    assert_headers_as_documented(spec, uploaded, 201, "Location")
    content = await client.get(f"{url}/attachments/{uploaded.json()['id']}/content", headers=me)
    assert_headers_as_documented(spec, content, 200, "ETag")
    keyed = me | {"Idempotency-Key": "contract-reply"}
    message = await client.post(f"{url}/messages", json={"body": "Tomorrow at 10."}, headers=keyed)
    assert_headers_as_documented(spec, message, 201, "Location")
    again = await client.post(f"{url}/messages", json={"body": "Tomorrow at 10."}, headers=keyed)
    assert_headers_as_documented(spec, again, 201, "Location", "Idempotent-Replayed")


def test_if_match_is_required_in_the_openapi_only_for_corrections(spec: dict[str, Any]) -> None:
    """PATCH /cases/{id} overwrites fields: without If-Match it is refused (428). The workflow
    steps check the case's status themselves, so If-Match is optional there."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"].lower() == "if-match":
                    assert parameter["required"] is ((method, path) == ("patch", "/cases/{case_id}")), (
                        method,
                        path,
                    )


async def test_a_correction_without_if_match_is_428(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter
) -> None:
    case = await factory.case()
    me = minter.headers("staff-1", "staff", name="Staff One", email="staff-1@casebridge.example")
    r = await client.patch(f"/cases/{case.id}", json={"priority": "high"}, headers=me)
    assert r.status_code == 428 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["errors"][0]["field"] == "header.If-Match"
    r = await client.patch(f"/cases/{case.id}", json={"priority": "high"}, headers=me | {"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    r = await client.post(f"/cases/{case.id}/claim", headers=me | {"If-Match": '"1"'})
    assert r.status_code == 412 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["current_version"] == 2
