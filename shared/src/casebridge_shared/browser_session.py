"""Browser sign-in for the screens: ``/session`` in every service (docs/screens.md).

A page signs in with ``POST /session`` (email and password as JSON) and from then on its calls
carry the session in HttpOnly cookies that scripts cannot read, so a cross-site script finds no
token to steal (no token in localStorage or sessionStorage). The cookies hold the same tokens
the API's clients use: the access token (a JWT every service verifies as before) and the
refresh token (rotated on every use, as at ``/auth/token``).

Who checks the password: order-intake (the token issuer) registers a local
``SessionIssuer`` on ``app.state.session_issuer``; every other service exchanges the
credentials server-side at the issuer's ``/auth/token`` (``RemoteSessionIssuer``), so login
throttling and the login records are the issuer's in both cases.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import httpx
import structlog
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from casebridge_shared.auth import CurrentUser, Principal
from casebridge_shared.openapi import RETRY_AFTER, response_headers
from casebridge_shared.problems import (
    PROBLEM_RESPONSES,
    Problem,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    problem_response,
)
from casebridge_shared.session_cookies import (
    SESSION_PATH,
    SessionCookieNames,
    check_csrf,
    cookie_names,
)

log = structlog.get_logger(__name__)

SESSION_REFUSED = "no session: sign in again"
UNREACHABLE = "sign-in is not possible right now: the token issuer cannot be reached"


@dataclass(frozen=True)
class IssuedTokens:
    """What the issuer hands out on sign-in and refresh (the ``/auth/token`` answer)."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class SessionIssuer(Protocol):
    """Checks credentials and refresh tokens; raises a Problem (401, 429, ...) when it refuses."""

    async def sign_in(self, request: Request, email: str, password: str) -> IssuedTokens: ...

    async def refresh(self, request: Request, refresh_token: str) -> IssuedTokens: ...

    async def sign_out(self, request: Request, refresh_token: str) -> None:
        """Revoke the refresh token's session at the issuer (best effort: sign-out never fails)."""


class RemoteSessionIssuer:
    """Exchanges credentials at the token issuer's ``/auth/token`` (services other than the issuer).

    The browser's address goes along in ``X-Forwarded-For``; the issuer uses it for its
    per-address login throttle only if it lists this service among its ``trusted_proxies``
    (otherwise every browser sign-in through this service counts against this service's
    address, and the per-account throttle still applies). docs/screens.md."""

    def __init__(self, token_url: str, *, timeout: float = 10.0, transport: Any = None) -> None:
        self._token_url = token_url
        self._timeout = timeout
        self._transport = transport  # tests may route to an in-process issuer

    async def _exchange(self, request: Request, form: dict[str, str]) -> IssuedTokens:
        headers = {"Accept": "application/json"}
        if request.client is not None:
            headers["X-Forwarded-For"] = request.client.host
        agent = request.headers.get("user-agent")
        if agent:
            headers["User-Agent"] = agent
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
                answer = await client.post(self._token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("session.issuer_unreachable", url=self._token_url, error=str(exc)[:200])
            raise ServiceUnavailable(UNREACHABLE) from exc
        if answer.status_code == 200:
            data = answer.json()
            return IssuedTokens(
                access_token=str(data["access_token"]),
                expires_in=int(data["expires_in"]),
                refresh_token=str(data["refresh_token"]),
                refresh_expires_in=int(data["refresh_expires_in"]),
            )
        raise _issuer_refusal(answer)

    async def sign_in(self, request: Request, email: str, password: str) -> IssuedTokens:
        form = {"grant_type": "password", "username": email, "password": password}
        return await self._exchange(request, form)

    async def refresh(self, request: Request, refresh_token: str) -> IssuedTokens:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._exchange(request, form)

    async def sign_out(self, request: Request, refresh_token: str) -> None:
        revoke_url = self._token_url.rsplit("/", 1)[0] + "/revoke"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
                answer = await client.post(revoke_url, data={"token": refresh_token})
            if answer.status_code != 200:
                log.warning("session.revoke_refused", status=answer.status_code)
        except httpx.HTTPError as exc:
            # The cookies are cleared anyway; the refresh token then lapses on its own.
            log.warning("session.revoke_failed", url=revoke_url, error=str(exc)[:200])


def _issuer_refusal(answer: httpx.Response) -> Problem:
    """The issuer's problem, passed on to the browser with its status and detail."""
    try:
        body = answer.json()
    except ValueError:
        body = {}
    detail = str(body.get("detail") or "the token issuer refused")
    if answer.status_code == 429:
        retry = answer.headers.get("Retry-After", "60")
        return TooManyRequests(detail, retry_after_seconds=int(retry) if retry.isdigit() else 60)
    if answer.status_code == 401:
        return Unauthorized(detail)
    if answer.status_code == 422:
        return Unprocessable(detail)
    log.warning("session.issuer_failed", status=answer.status_code, detail=detail[:200])
    return ServiceUnavailable("sign-in is not possible right now: the token issuer failed")


def remote_issuer(token_issuer: str, **kw: Any) -> SessionIssuer:
    return RemoteSessionIssuer(token_issuer.rstrip("/") + "/auth/token", **kw)


def session_issuer(request: Request) -> SessionIssuer:
    """The issuer the service registered, or the remote one of ``settings.token_issuer``."""
    state = request.app.state
    issuer: SessionIssuer | None = getattr(state, "session_issuer", None)
    if issuer is None:
        issuer = remote_issuer(state.container.settings.token_issuer)
        state.session_issuer = issuer
    return issuer


class SessionCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320, description="The account's email address")
    password: str = Field(min_length=1, max_length=256)


class SessionUser(BaseModel):
    """Who is signed in (what the page shows and uses to pick its screens)."""

    subject: str
    email: str | None
    name: str | None
    roles: list[str]
    department: str | None = None
    expires_at: float | None = Field(default=None, description="Access token expiry (epoch seconds)")

    @classmethod
    def of(cls, principal: Principal) -> SessionUser:
        return cls(
            subject=principal.subject,
            email=principal.email,
            name=principal.name,
            roles=sorted(r.value for r in principal.roles),
            department=principal.department.value if principal.department else None,
            expires_at=principal.expires_at,
        )


def _names(request: Request) -> SessionCookieNames:
    names = cookie_names(request)
    assert names is not None, "the session routes are mounted by create_app, which names the service"
    return names


def _set_cookies(request: Request, response: Response, tokens: IssuedTokens) -> None:
    names = _names(request)
    secure = request.url.scheme == "https"
    common: dict[str, Any] = {"secure": secure, "samesite": "strict"}
    response.set_cookie(
        names.access, tokens.access_token, max_age=tokens.expires_in, path="/", httponly=True, **common
    )
    response.set_cookie(
        names.refresh,
        tokens.refresh_token,
        max_age=tokens.refresh_expires_in,
        path=SESSION_PATH,
        httponly=True,
        **common,
    )
    # Readable by the page's script, which echoes it in X-CSRF-Token; a new one per token pair.
    response.set_cookie(
        names.csrf,
        secrets.token_urlsafe(32),
        max_age=tokens.refresh_expires_in,
        path="/",
        httponly=False,
        **common,
    )


def _clear_cookies(request: Request, response: Response) -> None:
    names = _names(request)
    secure = request.url.scheme == "https"
    for name, path, httponly in (
        (names.access, "/", True),
        (names.refresh, SESSION_PATH, True),
        (names.csrf, "/", False),
    ):
        response.delete_cookie(name, path=path, secure=secure, httponly=httponly, samesite="strict")


async def _signed_in(request: Request, response: Response, tokens: IssuedTokens) -> SessionUser:
    # Verified like any request's token (signature, audience, revocation) before it is handed out.
    from casebridge_shared.auth import authenticate

    principal = await authenticate(request, tokens.access_token)
    _set_cookies(request, response, tokens)
    response.headers["Cache-Control"] = "no-store"
    return SessionUser.of(principal)


def session_router() -> APIRouter:
    router = APIRouter(prefix=SESSION_PATH, tags=["browser session"], responses=PROBLEM_RESPONSES)

    @router.post(
        "",
        response_model=SessionUser,
        summary="Sign in from a browser: the session is kept in HttpOnly cookies",
        responses=response_headers(429, RETRY_AFTER, description="Too many failed sign-ins (Retry-After)"),
    )
    async def sign_in(
        body: SessionCredentials,
        request: Request,
        response: Response,
        issuer: Annotated[SessionIssuer, Depends(session_issuer)],
    ) -> SessionUser:
        tokens = await issuer.sign_in(request, body.email, body.password)
        return await _signed_in(request, response, tokens)

    @router.get("", response_model=SessionUser, summary="Who is signed in (401 when nobody)")
    async def read_session(principal: CurrentUser, response: Response) -> SessionUser:
        response.headers["Cache-Control"] = "no-store"
        return SessionUser.of(principal)

    @router.post(
        "/refresh",
        response_model=SessionUser,
        summary="New session cookies for the refresh cookie (it rotates on every use)",
    )
    async def refresh_session(
        request: Request,
        response: Response,
        issuer: Annotated[SessionIssuer, Depends(session_issuer)],
    ) -> SessionUser | Response:
        names = _names(request)
        refresh_token = request.cookies.get(names.refresh)
        if not refresh_token:
            raise Unauthorized(SESSION_REFUSED)
        check_csrf(request, names)
        try:
            tokens = await issuer.refresh(request, refresh_token)
        except Unauthorized:
            # Used, expired or revoked: the cookies are worthless, so the browser forgets them.
            refused = problem_response(Unauthorized(SESSION_REFUSED), request)
            _clear_cookies(request, refused)
            return refused
        return await _signed_in(request, response, tokens)

    @router.delete(
        "",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Sign out: the session's refresh token is revoked at the issuer, the cookies cleared",
    )
    async def sign_out(
        request: Request, issuer: Annotated[SessionIssuer, Depends(session_issuer)]
    ) -> Response:
        names = _names(request)
        refresh_token = request.cookies.get(names.refresh)
        if request.cookies.get(names.access) or refresh_token:
            check_csrf(request, names)  # another site must not sign the user out
        if refresh_token:
            await issuer.sign_out(request, refresh_token)
        answer = Response(status_code=status.HTTP_204_NO_CONTENT)
        _clear_cookies(request, answer)
        answer.headers["Cache-Control"] = "no-store"
        return answer

    return router
