"""RFC 9457 problem details for every error a service returns.

Domain code raises :class:`Problem` subclasses (no HTTP knowledge needed
beyond the status they map to); the handlers installed by
:func:`install_problem_handlers` turn them, FastAPI's validation errors and
Starlette's HTTP errors into ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from casebridge_shared.db import is_database_unreachable
from casebridge_shared.openapi import HEADERS, RETRY_AFTER

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://casebridge.dev/problems/"

log = structlog.get_logger(__name__)


class Problem(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.field:
            body["errors"] = [{"field": self.field, "reason": self.detail}]
        body.update(self.extensions)
        return body


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str = "missing or invalid bearer token", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "Version mismatch"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(Problem):
    status, slug, title = 422, "validation-error", "Invalid request"


class TooManyRequests(Problem):
    """429: the client must wait ``Retry-After`` seconds (login throttling)."""

    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int, **kw: Any) -> None:
        headers = {"Retry-After": str(retry_after_seconds), **kw.pop("headers", {})}
        super().__init__(detail, headers=headers, retry_after=retry_after_seconds, **kw)


class PreconditionRequired(Problem):
    status, slug, title = 428, "precondition-required", "If-Match header required"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "unavailable", "Service unavailable"


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = str(request.url.path) if request is not None else None
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie", "form"}:
        where, rest = parts[0], parts[1:]
        return f"{where}.{'.'.join(rest)}" if rest else where
    return ".".join(parts)


_STATUS_PROBLEMS: dict[int, type[Problem]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        PreconditionRequired,
        ServiceUnavailable,
    )
}


def _only_if_match_missing(exc: RequestValidationError) -> bool:
    errors = exc.errors()
    return bool(errors) and all(
        err.get("type") == "missing"
        and [str(part).lower() for part in err.get("loc", ())] == ["header", "if-match"]
        for err in errors
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if _only_if_match_missing(exc):
            # A route that requires If-Match declares the header required (so the OpenAPI
            # says so); its absence alone is RFC 6585's 428, not a malformed request.
            return problem_response(
                PreconditionRequired(
                    "send If-Match with the ETag from your last read of this resource",
                    field="header.If-Match",
                ),
                request,
            )
        errors = []
        for err in exc.errors():
            reason = str(err.get("msg", "invalid"))
            field = _field_path(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                # FastAPI's location is ("body", <character position>): the field is the body,
                # the position belongs in the reason.
                loc = list(err.get("loc", ()))
                where = f" at character {loc[1]}" if len(loc) > 1 else ""
                error = str(err.get("ctx", {}).get("error", "")) or "invalid JSON"
                field, reason = "body", f"body is not valid JSON{where}: {error}"
            errors.append({"field": field, "reason": reason})
        first = errors[0] if errors else {"field": "", "reason": "invalid request"}
        problem = Unprocessable(f"{first['field']}: {first['reason']}", errors=errors)
        body = problem.body(str(request.url.path))
        return JSONResponse(body, status_code=422, media_type=PROBLEM_CONTENT_TYPE)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, Problem):
            # FastAPI turns any error while it reads the body into "400 error parsing the body",
            # the body limit's 413 (raised as the body streams in) included: answer the cause.
            return problem_response(exc.__cause__, request)
        cls = _STATUS_PROBLEMS.get(exc.status_code, Problem)
        problem = cls(str(exc.detail), headers=dict(exc.headers or {}))
        if cls is Problem:
            problem.status = exc.status_code
            problem.slug = f"http-{exc.status_code}"
            problem.title = str(exc.detail)
        return problem_response(problem, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_database_unreachable(exc):
            # A restart or failover of the database, not a bug in the request: the
            # client may try again (with its Idempotency-Key, where it sent one).
            log.warning("http.database_unavailable", path=request.url.path, error=type(exc).__name__)
            problem = ServiceUnavailable(
                "the database cannot be reached at the moment; try again",
                headers={"Retry-After": "1"},
            )
            return problem_response(problem, request)
        log.exception("http.unhandled_error", path=request.url.path)
        return problem_response(Problem("an unexpected error occurred"), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": cls.title,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, cls in _STATUS_PROBLEMS.items()
    if status in (401, 403, 404, 409, 412, 413, 422, 428)
}
# Any route answers 503 while its database cannot be reached (see on_unexpected), with
# Retry-After: documented once here for all of them.
PROBLEM_RESPONSES[503] = {
    **PROBLEM_RESPONSES[401],
    "description": ServiceUnavailable.title,
    "headers": {RETRY_AFTER: HEADERS[RETRY_AFTER]},
}
