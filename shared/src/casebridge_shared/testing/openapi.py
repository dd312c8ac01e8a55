"""Checks of a service's OpenAPI against what the service really does (tests only).

:func:`undocumented_headers` takes a real response and the service's OpenAPI and
names the response headers of :data:`casebridge_shared.openapi.HEADERS` that the
response carries but its operation does not document for that status: a client
generated from the contract would not know to read them.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from casebridge_shared.openapi import HEADERS

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operation_ids(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every operation of ``spec`` as (operationId, method, path)."""
    return [
        (operation.get("operationId", ""), method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def operation_for(spec: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The operation that answers ``method path`` (a concrete path), literal paths first."""
    candidates = sorted(spec["paths"].items(), key=lambda kv: kv[0].count("{"))
    for template, item in candidates:
        if method.lower() in item and _template(template).match(path):
            operation: dict[str, Any] = item[method.lower()]
            return operation
    return None


def undocumented_headers(spec: dict[str, Any], response: httpx.Response) -> list[str]:
    """The headers of ``HEADERS`` in ``response`` that its operation's OpenAPI does not list.

    Raises ``LookupError`` for a request that no operation of ``spec`` answers.
    """
    request = response.request
    operation = operation_for(spec, request.method, request.url.path)
    if operation is None:
        raise LookupError(f"no operation in the OpenAPI for {request.method} {request.url.path}")
    documented = operation.get("responses", {}).get(str(response.status_code), {}).get("headers", {})
    documented_names = {name.lower() for name in documented}
    return [name for name in HEADERS if name in response.headers and name.lower() not in documented_names]


def documented_headers(spec: dict[str, Any], response: httpx.Response) -> set[str]:
    """The headers the OpenAPI lists for ``response``'s operation and status."""
    request = response.request
    operation = operation_for(spec, request.method, request.url.path)
    if operation is None:
        raise LookupError(f"no operation in the OpenAPI for {request.method} {request.url.path}")
    headers: dict[str, Any] = (
        operation.get("responses", {}).get(str(response.status_code), {}).get("headers", {})
    )
    return set(headers)


ALWAYS_SENT = ("ETag", "Location")
"""Headers whose documentation promises them on every answer with that status (the
others, Idempotent-Replayed and Retry-After, come only with some)."""


def assert_headers_as_documented(
    spec: dict[str, Any], response: httpx.Response, status: int, *sent: str
) -> httpx.Response:
    """``response`` has ``status`` and carries ``sent``; the OpenAPI lists every such header it
    carries, and each of :data:`ALWAYS_SENT` that the OpenAPI lists is there."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    for name in sent:
        assert name in response.headers, f"{where} sent no {name}"
    missing = undocumented_headers(spec, response)
    assert not missing, f"{where} sends {missing} that its OpenAPI does not document"
    for name in documented_headers(spec, response) & set(ALWAYS_SENT):
        assert name in response.headers, f"{where} documents {name} but sent none"
    return response
