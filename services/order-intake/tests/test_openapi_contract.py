"""order-intake's OpenAPI against real answers: the response headers it sends are the ones it documents,
and If-Match is declared required exactly where a request without it gets 428."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.auth import Role
from casebridge_shared.testing.openapi import assert_headers_as_documented

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


@pytest.fixture
def spec(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


async def test_the_headers_sent_are_the_documented_ones(
    client: httpx.AsyncClient, factory: Factory, spec: dict[str, Any]
) -> None:
    registered = await client.post(
        "/auth/register",
        json={
            "email": "contract@example.org",
            "password": PASSWORD,
            "full_name": "Contract",
            "phone": "+49 30 1",
        },
    )
    assert_headers_as_documented(spec, registered, 201, "Location", "ETag")
    customer = await factory.customer()
    auth = factory.auth(customer)
    assert_headers_as_documented(spec, await client.get("/me", headers=auth), 200, "ETag")

    admin = factory.auth(await factory.user(Role.ADMIN))
    product = await factory.product()
    assert_headers_as_documented(spec, await client.get(f"/products/{product.id}"), 200, "ETag")
    assert_headers_as_documented(
        spec,
        await client.patch(
            f"/products/{product.id}", json={"title": "Renamed"}, headers=admin | {"If-Match": '"1"'}
        ),
        200,
        "ETag",
    )

    body = {"product_id": product.id, "description": "Help"}
    keyed = auth | {"Idempotency-Key": "contract-1"}
    placed = assert_headers_as_documented(
        spec, await client.post("/orders", json=body, headers=keyed), 201, "Location", "ETag"
    )
    replayed = assert_headers_as_documented(
        spec, await client.post("/orders", json=body, headers=keyed), 201, "Idempotent-Replayed"
    )
    assert replayed.json()["id"] == placed.json()["id"]
    order_url = placed.headers["Location"]
    assert_headers_as_documented(spec, await client.get(order_url, headers=auth), 200, "ETag")
    assert_headers_as_documented(
        spec,
        await client.patch(
            order_url, json={"description": "More"}, headers=auth | {"If-Match": placed.headers["ETag"]}
        ),
        200,
        "ETag",
    )
    messages = f"{order_url}/messages"
    keyed = auth | {"Idempotency-Key": "contract-m"}
    assert_headers_as_documented(
        spec, await client.post(messages, json={"body": "hello"}, headers=keyed), 201, "Location"
    )
    assert_headers_as_documented(
        spec, await client.post(messages, json={"body": "hello"}, headers=keyed), 201, "Idempotent-Replayed"
    )
    assert_headers_as_documented(spec, await client.post(f"{order_url}/cancel", headers=auth), 200, "ETag")


async def test_throttled_logins_document_retry_after(
    client: httpx.AsyncClient, factory: Factory, spec: dict[str, Any]
) -> None:
    user = await factory.customer()
    for _ in range(50):  # bounded: the account limit is far below
        r = await client.post("/auth/token", data={"username": user.email, "password": "not-the-password"})
        if r.status_code == 429:
            break
        assert r.status_code == 401, r.text
    assert_headers_as_documented(spec, r, 429, "Retry-After")


def _if_match(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    (parameter,) = [p for p in spec["paths"][path][method]["parameters"] if p["name"].lower() == "if-match"]
    return parameter


def test_if_match_is_required_in_the_openapi_where_the_server_requires_it(spec: dict[str, Any]) -> None:
    assert _if_match(spec, "patch", "/orders/{order_id}")["required"] is True
    assert _if_match(spec, "put", "/users/{user_id}/roles")["required"] is True
    for method, path in [
        ("post", "/orders/{order_id}/cancel"),
        ("patch", "/products/{product_id}"),
        ("delete", "/products/{product_id}"),
        ("patch", "/me"),
    ]:
        assert _if_match(spec, method, path)["required"] is False, (method, path)


async def test_a_required_if_match_left_out_is_428_and_a_bad_body_still_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    product = await factory.product()
    placed = await client.post(
        "/orders", json={"product_id": product.id, "description": "Help"}, headers=auth
    )
    url = placed.headers["Location"]

    for headers in (auth, auth | {"If-Match": ""}, auth | {"If-Match": "  "}):
        r = await client.patch(url, json={"description": "v2"}, headers=headers)
        assert r.status_code == 428 and r.headers["content-type"] == PROBLEM, r.text
        assert r.json()["errors"] == [{"field": "header.If-Match", "reason": r.json()["detail"]}]
    # A malformed body is reported with the missing header, as one 422.
    r = await client.patch(url, json={"description": 5}, headers=auth)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert {"body.description", "header.If-Match"} <= {e["field"] for e in r.json()["errors"]}
    # Without a token it is still 401 first: nothing about the order is told.
    assert (await client.patch(url, json={"description": "v2"})).status_code == 401

    for tag in ('W/"1"', "1", '"1"'):
        fresh = await client.get(url, headers=auth)
        current = fresh.headers["ETag"].strip('"')
        r = await client.patch(
            url, json={"description": f"via {tag}"}, headers=auth | {"If-Match": tag.replace("1", current)}
        )
        assert r.status_code == 200, (tag, r.text)
    for stale in ('"1"', '"99999999999999999999"', '"-1"', "abc", '"', '"1", "2"'):
        r = await client.patch(url, json={"description": "stale"}, headers=auth | {"If-Match": stale})
        assert r.status_code == 412 and r.headers["content-type"] == PROBLEM, (stale, r.text)
    r = await client.patch(url, json={"description": "any"}, headers=auth | {"If-Match": "*"})
    assert r.status_code == 200, r.text
