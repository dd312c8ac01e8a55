"""The FastAPI application every service starts from.

Adds what all four services need the same way: problem+json errors, a request
body limit, trace ids in logs and responses, request metrics, security headers
on every answer, the client address from trusted proxies only, ``/healthz``,
``/readyz``, ``/metrics`` and the API docs pages (``/docs``, ``/redoc``).
"""

from __future__ import annotations

import html
import ipaddress
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import Token
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casebridge_shared import metrics, telemetry
from casebridge_shared.db import is_database_unreachable
from casebridge_shared.keyfiles import owner_only_umask
from casebridge_shared.openapi import operation_id
from casebridge_shared.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_RESPONSES,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    install_problem_handlers,
)
from casebridge_shared.tracing import context_from, current_traceparent, tracer

ReadinessCheck = Callable[[], Awaitable[None]]
log = structlog.get_logger("casebridge.http")


# The probes and the scrape: neither logged nor traced (a span per poll would be most traces).
_UNTRACED = frozenset(("/healthz", "/readyz", "/metrics"))


class RequestContextMiddleware:
    """Trace context, access log and latency histogram (pure ASGI, no buffering)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span: Span | None = None
        token: Token[otel_context.Context] | None = None
        if scope["path"] not in _UNTRACED and not trace.get_current_span().get_span_context().is_valid:
            # No FastAPI instrumentation around this app (spans are not exported): the
            # request's own server span continues the caller's trace, so its logs, its
            # events and its answer carry the trace id all the same.
            incoming: dict[str, str] = {}
            for name, value in scope.get("headers", []):
                if name in (b"traceparent", b"tracestate"):
                    incoming.setdefault(name.decode(), value.decode("latin-1"))
            span = tracer().start_span(
                f"{scope['method']} {scope['path']}",
                context=context_from(incoming.get("traceparent"), incoming.get("tracestate")),
                kind=SpanKind.SERVER,
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        traceparent = current_traceparent()
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if traceparent is not None:
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
            if template not in _UNTRACED:
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            if span is not None:
                span.update_name(f"{scope['method']} {template}")
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                span.end()
            if token is not None:
                otel_context.detach(token)


# Content-Security-Policy of everything that is not a page: API answers (JSON,
# problem+json) and downloads. Nothing may load, run or frame it; a file that a
# browser would still render is a sandboxed, unique origin.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
# Headers on every answer unless the route set its own.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def page_csp(*, connect_src: Sequence[str] = (), script_hashes: Sequence[str] = ()) -> str:
    """The policy of our own HTML pages: scripts, styles and images from this origin only
    (no 'unsafe-inline'), calls to this origin and ``connect_src``, never framed."""
    scripts = " ".join(("'self'", *(f"'{h}'" for h in script_hashes)))
    connect = " ".join(("'self'", *connect_src))
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


class SecurityHeadersMiddleware:
    """``nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy`` and a Content-Security-Policy on
    every answer (pure ASGI). A route that sets a header itself keeps its own value: the staff
    app's pages and the docs pages set their page policy, everything else gets ``API_CSP``; an
    HTML answer without its own policy gets ``page_csp()``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    html = _content_type(headers) == b"text/html"
                    headers.append((b"content-security-policy", (page_csp() if html else API_CSP).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


class ForwardedForMiddleware:
    """The client's address: the peer's, or, only when the peer is one of ``trusted_proxies``
    (addresses or networks), the nearest untrusted address in its ``X-Forwarded-For`` (and the
    scheme of ``X-Forwarded-Proto``). uvicorn's own proxy-header handling is off
    (``operations.api``), so this is the one place that decides; with no trusted proxies
    (the default) forwarded headers are ignored.
    """

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[str]) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not self.trusted or not client:
            await self.app(scope, receive, send)
            return
        if self._trusted(client[0]):
            forwarded: list[str] = []
            proto = None
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-for":
                    forwarded.extend(part.strip() for part in value.decode("latin-1").split(","))
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").strip().lower()
            # Walk from the nearest hop back: the first address not ours is the client.
            for hop in reversed([h for h in forwarded if h]):
                if not self._trusted(hop):
                    if _is_address(hop):
                        scope = dict(scope, client=(hop, 0))
                    break
            if proto in ("http", "https") and scope["type"] == "http":
                scope = dict(scope, scheme=proto)
        await self.app(scope, receive, send)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
                    problem = PayloadTooLarge(_too_large(limit), field="body")
                    await _send_problem(send, problem, instance=scope["path"])
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


async def _send_problem(send: Send, problem: PayloadTooLarge, *, instance: str) -> None:
    response = JSONResponse(
        problem.body(instance), status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE
    )
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
    trusted_proxies: Sequence[str] = (),
    metrics_token: str = "",
) -> FastAPI:
    owner_only_umask()  # what the api writes under var/ (uploads, kept keys) is its owner's alone
    telemetry.setup_telemetry(service)
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        openapi_tags=openapi_tags,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        # placeOrder, claimCase: what generated clients name their methods after.
        generate_unique_id_function=operation_id,
        # Served by docs_router() with their own Content-Security-Policy.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans off: with the SDK's provider set but nothing
        # exported they would be made per request (server, endpoint, each dependency) and
        # dropped; when exporting, the FastAPI instrumentation makes the server span
        # (telemetry.instrument_app). Metrics are Prometheus's, logs structlog's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.readiness_checks = {}
    app.state.metrics_hooks = []
    app.state.metrics_token = metrics_token
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
    if trusted_proxies:
        app.add_middleware(ForwardedForMiddleware, trusted_proxies=list(trusted_proxies))
    app.include_router(operations_router())
    app.include_router(docs_router(title))
    # The screens' browser sign-in (/session) and screen kit (/assets/kit/), in every service.
    # Imported here: both build on this module.
    from casebridge_shared.browser_session import session_router
    from casebridge_shared.screens import kit_router

    app.state.service = service  # names the session cookies (casebridge_shared.session_cookies)
    app.include_router(session_router())
    app.include_router(kit_router(service))
    # The server span around the whole stack (only when spans are exported); before
    # _outermost, since the instrumentation expects Starlette's own stack to wrap.
    telemetry.instrument_app(app)
    _outermost(app, SecurityHeadersMiddleware)
    _add_problem_schema(app)
    return app


def _outermost(app: FastAPI, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
    """Wrap the whole stack, Starlette's ServerErrorMiddleware included: a 500 carries the
    security headers too (``add_middleware`` would put it inside)."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return middleware(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


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
                "instance": str(request.url.path),
                "checks": results,
            },
            status_code=503,
            media_type=PROBLEM_CONTENT_TYPE,
        )

    # 401 only where the metrics_token setting is set (then: ``Authorization: Bearer <token>``).
    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={401: PROBLEM_RESPONSES[401]},
    )
    async def read_metrics(request: Request) -> Response:
        if not metrics.authorized(request.app.state.metrics_token, request.headers.get("authorization")):
            raise Unauthorized("/metrics needs the metrics bearer token (setting metrics_token)")
        for hook in request.app.state.metrics_hooks:
            try:
                await hook()
            except Exception:  # a failing gauge refresh must not hide the other metrics
                log.warning("metrics.hook_failed", exc_info=True)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


# Swagger UI and ReDoc, vendored from npm (docs_assets/README.md): the docs pages work offline.
DOCS_ASSETS = Path(__file__).parent / "docs_assets"
DOCS_ASSET_FILES = {
    "swagger-init.js": "text/javascript",
    "swagger-ui/swagger-ui-bundle.js": "text/javascript",
    "swagger-ui/swagger-ui.css": "text/css",
    "swagger-ui/oauth2-redirect.js": "text/javascript",
    "redoc/redoc.standalone.js": "text/javascript",
}
# The policy of the docs pages: everything from this origin, no inline script. Inline styles
# stay allowed: Swagger UI (React) sets style attributes and ReDoc (styled-components) injects
# <style> elements at run time, neither can be hashed or given a nonce. ReDoc runs its search
# in a worker it starts from a blob.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_DOCS_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs-assets/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/openapi.json" data-oauth2-redirect-url="/docs/oauth2-redirect"></div>
<script src="/docs-assets/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/docs-assets/swagger-init.js"></script>
</body>
</html>
"""

_OAUTH2_REDIRECT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Swagger UI: OAuth2 Redirect</title></head>
<body>
<script src="/docs-assets/swagger-ui/oauth2-redirect.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" href="data:,">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs-assets/redoc/redoc.standalone.js"></script>
</body>
</html>
"""


def docs_router(title: str) -> APIRouter:
    """``/docs`` (Swagger UI), its OAuth2 redirect page and ``/redoc``, and the viewers' files
    under ``/docs-assets/`` (by name, from a fixed list): nothing comes from a CDN."""
    router = APIRouter(include_in_schema=False)
    escaped = html.escape(title)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_SWAGGER_PAGE.format(title=escaped), headers=_DOCS_HEADERS)

    @router.get("/docs/oauth2-redirect")
    async def swagger_ui_redirect() -> HTMLResponse:
        return HTMLResponse(_OAUTH2_REDIRECT_PAGE, headers=_DOCS_HEADERS)

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return HTMLResponse(_REDOC_PAGE.format(title=escaped), headers=_DOCS_HEADERS)

    @router.get("/docs-assets/{name:path}")
    async def docs_asset(name: str) -> FileResponse:
        if name not in DOCS_ASSET_FILES:
            raise NotFound(f"The docs pages have no file {name!r}.", field="name")
        # Not versioned in the URL: cached for an hour, so an upgrade shows within one.
        return FileResponse(
            DOCS_ASSETS / name,
            media_type=DOCS_ASSET_FILES[name],
            headers={"Cache-Control": "public, max-age=3600"},
        )

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
            "required": ["type", "title", "status", "detail", "instance"],
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def lifespan_noop(_app: FastAPI) -> AsyncIterator[None]:
    yield
