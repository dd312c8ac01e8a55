"""What every service's OpenAPI says the same way: operation ids and response headers.

Operation ids are what a generated client names its methods after: ``placeOrder``
and ``claimCase``, not FastAPI's default ``place_order_orders_post``. They come from
the route function's name, so the function is named for what the operation does
(``claim_case``, not ``claim``), and the names are unique within a service (the
test in tests/test_openapi_contract.py holds every service to that).

Response headers that the server sends are declared on the routes that send them,
with :func:`response_headers`, so that a client reads ``ETag`` or ``Location``
from the contract rather than from the code.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

ETAG = "ETag"
LOCATION = "Location"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
RETRY_AFTER = "Retry-After"
LINK = "Link"

HEADERS: dict[str, dict[str, Any]] = {
    ETAG: {
        "description": 'The version of the resource as an entity tag (`"3"`): send it back in '
        "If-Match to change the resource only if nobody changed it since",
        "schema": {"type": "string"},
    },
    LOCATION: {
        "description": "Where the created resource is read (a path on this service)",
        "schema": {"type": "string"},
    },
    IDEMPOTENT_REPLAYED: {
        "description": "`true` when this is the answer to an earlier request with the same "
        "Idempotency-Key, replayed: nothing new was created",
        "schema": {"type": "string", "enum": ["true"]},
    },
    RETRY_AFTER: {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    },
    LINK: {
        "description": 'RFC 8288 links to other pages of this list, with the same filters: `rel="first"`, '
        'and `rel="next"` (a `cursor` URL) while more items follow, e.g. '
        '`</orders?status=submitted>; rel="first", </orders?status=submitted&cursor=...>; rel="next"`',
        "schema": {"type": "string"},
    },
}
"""Every response header the services document, by name (see :func:`response_headers`)."""


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {
        "description": "Not Modified: the resource is still at the ETag sent in If-None-Match (no body)",
        "headers": {ETAG: HEADERS[ETAG]},
    }
}
"""``responses=`` entry of a GET that answers ``If-None-Match`` (see ``versioning.not_modified``)."""


def camel_case(name: str) -> str:
    """``place_order`` -> ``placeOrder`` (leading and doubled underscores dropped)."""
    first, *rest = [part for part in name.split("_") if part]
    return first[0].lower() + first[1:] + "".join(part[0].upper() + part[1:] for part in rest)


def operation_id(route: APIRoute) -> str:
    """The OpenAPI ``operationId`` of a route: its function's name in camelCase.

    FastAPI's ``generate_unique_id_function`` for every service (``create_app``).
    Unlike FastAPI's default, it does not add the path and method to make the id
    unique: a clash of function names within a service is a naming mistake, which
    the contract test reports, rather than something to paper over.
    """
    return camel_case(route.name)


def response_headers(
    status_code: int, *names: str, description: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that sends ``names`` (from :data:`HEADERS`) with ``status_code``.

    Merge several with ``{**response_headers(201, ETAG), **response_headers(429, RETRY_AFTER)}``;
    FastAPI merges them with the route's own response (model, description).
    """
    response: dict[str, Any] = {"headers": {name: HEADERS[name] for name in names}}
    if description is not None:
        response["description"] = description
    return {status_code: response}
