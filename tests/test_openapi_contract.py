"""The four services' OpenAPI as a contract for generated clients: operation ids, If-Match, Idempotency-Key.

Built from each service's real application (no lifespan needed: the OpenAPI is made
from the routes alone).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI

import case_handling.main
import customer_ledger.main
import notifier.main
import order_intake.main
from casebridge_shared.openapi import camel_case
from casebridge_shared.testing.openapi import HTTP_METHODS, operation_ids

APPS = {
    "order-intake": order_intake.main.create_application,
    "case-handling": case_handling.main.create_application,
    "notifier": notifier.main.create_application,
    "customer-ledger": customer_ledger.main.create_application,
}
CAMEL_CASE = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")


@pytest.fixture(scope="module", params=sorted(APPS))
def spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    app: FastAPI = APPS[request.param]()
    return app.openapi()


def test_every_operation_id_is_camel_case_unique_and_names_no_method(spec: dict[str, Any]) -> None:
    ids = operation_ids(spec)
    assert len(ids) > 10
    for operation_id, method, path in ids:
        assert CAMEL_CASE.fullmatch(operation_id), (
            f"{method.upper()} {path}: {operation_id!r} is not camelCase"
        )
        # FastAPI's default ids end with the method (place_order_orders_post); camelCase, ...Post.
        ending = next((m for m in HTTP_METHODS if operation_id.endswith(m.capitalize())), None)
        assert ending is None, f"{method.upper()} {path}: {operation_id!r} ends with the method {ending!r}"
    twice = [name for name, n in Counter(name for name, _, _ in ids).items() if n > 1]
    assert not twice, f"operation ids used twice: {twice}"


def test_the_operations_the_clients_know_by_name(spec: dict[str, Any]) -> None:
    """A sample: renaming one of these renames a method of every generated client."""
    expected = {
        "Casebridge order-intake": {
            ("post", "/orders"): "placeOrder",
            ("patch", "/orders/{order_id}"): "updateOrder",
        },
        "Casebridge case-handling": {
            ("get", "/cases"): "listCases",
            ("post", "/cases/{case_id}/claim"): "claimCase",
        },
        "Casebridge notifier": {("post", "/notifications/read-all"): "markAllRead"},
        "Casebridge customer-ledger": {("post", "/customers"): "createCustomer"},
    }[spec["info"]["title"]]
    for (method, path), operation_id in expected.items():
        assert spec["paths"][path][method]["operationId"] == operation_id
    # Every service shares the session and operations routes, under the same names.
    assert spec["paths"]["/session"]["get"]["operationId"] == "readSession"
    assert spec["paths"]["/metrics"]["get"]["operationId"] == "readMetrics"


def test_if_match_is_documented_with_the_same_words_everywhere(spec: dict[str, Any]) -> None:
    headers = [
        parameter
        for item in spec["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"].lower() == "if-match"
    ]
    for parameter in headers:
        assert parameter["name"] == "If-Match"
        assert "412" in parameter["description"] and "*" in parameter["description"]


# Every creating POST that takes an Idempotency-Key, by service: docs/api-conventions.md lists
# the same. A new creating POST belongs here (and there) once it takes the key.
IDEMPOTENT_POSTS = {
    "Casebridge order-intake": {
        "/orders",
        "/orders/{order_id}/messages",
        "/products",
        "/users",
        "/machine-clients",
        "/auth/register",
        "/orders/{order_id}/files",
    },
    "Casebridge case-handling": {
        "/cases/{case_id}/messages",
        "/cases/{case_id}/communications",
        "/cases/{case_id}/solution",
        "/cases/{case_id}/attachments",
    },
    "Casebridge notifier": {"/webhooks"},
    "Casebridge customer-ledger": {
        "/customers",
        "/customers/{customer_id}/demands",
        "/customers/{customer_id}/progress",
        "/customers/{customer_id}/payments",
        "/customers/{customer_id}/associations",
        "/grants",
        "/audit/records/{journal_index}/corrections",
        "/bulk",
    },
}


def test_idempotency_key_is_taken_where_listed_and_documented_the_same_everywhere(
    spec: dict[str, Any],
) -> None:
    taking = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            keys = [
                p
                for p in operation.get("parameters", [])
                if p["in"] == "header" and p["name"].lower() == "idempotency-key"
            ]
            if not keys:
                continue
            assert method == "post", f"{method.upper()} {path} takes an Idempotency-Key"
            taking.add(path)
            (key,) = keys
            assert key["name"] == "Idempotency-Key" and not key.get("required", False)
            assert key["schema"]["anyOf"][0]["maxLength"] == 200
            assert "Idempotent-Replayed" in key["description"] and "422" in key["description"]
            # The answer says when it is a replay.
            success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
            assert "Idempotent-Replayed" in success.get("headers", {}), f"POST {path}"
    assert taking == IDEMPOTENT_POSTS[spec["info"]["title"]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("place_order", "placeOrder"), ("claim_case", "claimCase"), ("healthz", "healthz"), ("_x__y_", "xY")],
)
def test_camel_case(name: str, expected: str) -> None:
    assert camel_case(name) == expected


def test_every_list_paged_by_cursor_documents_its_link_header_and_next_cursor(spec: dict[str, Any]) -> None:
    """A generated client reads the ``Link`` header and ``next_cursor`` from the contract."""
    paged = {
        "Casebridge order-intake": {"/orders"},
        "Casebridge case-handling": {"/cases"},
        "Casebridge notifier": {"/notifications"},
        "Casebridge customer-ledger": {"/audit/logins", "/audit/changes", "/audit/reads"},
    }[spec["info"]["title"]]
    with_cursor = {
        path
        for path, item in spec["paths"].items()
        if any(p["name"] == "cursor" for p in item.get("get", {}).get("parameters", []))
    }
    assert with_cursor == paged
    for path in paged:
        answer = spec["paths"][path]["get"]["responses"]["200"]
        assert 'rel="next"' in answer["headers"]["Link"]["description"], path
        ref = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert "next_cursor" in spec["components"]["schemas"][ref]["properties"], path
