"""The FastAPI application every service starts from.

Adds what all four services need the same way: problem+json errors, a request
body limit, trace ids in logs and responses, request metrics, ``/healthz``,
``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casebridge_shared import metrics
from casebridge_shared.db import is_database_unreachable
from casebridge_shared.problems import (
    PROBLEM_CONTENT_TYPE,
    PayloadTooLarge,
    install_problem_handlers,
)
from casebridge_shared.tracing import child_of, current_traceparent, parse_trace_id

ReadinessCheck = Callable[[], Awaitable[None]]
log = structlog.get_logger("casebridge.http")


class RequestContextMiddleware:
    """Trace context, access log and latency histogram (pure ASGI, no buffering)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"traceparent":
                incoming = value.decode("latin-1")
                break
        traceparent = child_of(incoming)
        token = current_traceparent.set(traceparent)
        structlog.contextvars.bind_contextvars(trace_id=parse_trace_id(traceparent))
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"traceparent", traceparent.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Answered outside this middleware by the last-resort handler: a database that
            # cannot be reached is its 503, not a 500, in the log line and the metric too.
            if is_database_unreachable(exc):
                status = 503
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_REQUEST_SECONDS.labels(self.service, scope["method"], template, str(status)).observe(
                elapsed
            )
            if template not in ("/metrics", "/healthz", "/readyz"):
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("trace_id")
            current_traceparent.reset(token)


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, without reading them whole.

    Routes that take larger uploads (attachments) raise the limit for their
    path prefix, or for the paths a compiled regular expression matches in full,
    via ``overrides``.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[str | re.Pattern[str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _limit_for(self, path: str) -> int:
        for key, limit in self.overrides.items():
            if path.startswith(key) if isinstance(key, str) else key.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _send_problem(send, PayloadTooLarge(_too_large(limit), field="body"))
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(_too_large(limit), field="body")
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes"


async def _send_problem(send: Send, problem: PayloadTooLarge) -> None:
    response = JSONResponse(problem.body(), status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def create_app(
    *,
    service: str,
    title: str,
    description: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None,
    max_body_bytes: int,
    body_limit_overrides: dict[str | re.Pattern[str], int] | None = None,
    openapi_tags: list[dict[str, Any]] | None = None,
    cors_allow_origins: Sequence[str] = (),
) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        openapi_tags=openapi_tags,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    app.state.readiness_checks = {}
    app.state.metrics_hooks = []
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, overrides=body_limit_overrides)
    if cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_allow_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["ETag", "Location", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, service=service)
    app.include_router(operations_router())
    _add_problem_schema(app)
    return app


def operations_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: dependencies reachable")
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
        results: dict[str, str] = {}
        ready = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready
                ready = False
                results[name] = f"failed: {type(exc).__name__}"
        if ready:
            return JSONResponse({"status": "ready", "checks": results})
        return JSONResponse(
            {
                "type": "https://casebridge.dev/problems/unavailable",
                "title": "Not ready",
                "status": 503,
                "detail": "a dependency is not reachable",
                "checks": results,
            },
            status_code=503,
            media_type=PROBLEM_CONTENT_TYPE,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint(request: Request) -> Response:
        for hook in request.app.state.metrics_hooks:
            try:
                await hook()
            except Exception:  # a failing gauge refresh must not hide the other metrics
                log.warning("metrics.hook_failed", exc_info=True)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _add_problem_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            },
            "required": ["type", "title", "status", "detail"],
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def lifespan_noop(_app: FastAPI) -> AsyncIterator[None]:
    yield
