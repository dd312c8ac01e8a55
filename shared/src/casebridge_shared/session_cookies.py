"""The browser session's cookies and their CSRF check, read by the auth dependency.

Kept apart from ``browser_session`` (the ``/session`` routes) so ``auth`` can use it without
importing the routes. docs/screens.md explains the design.

The four services may run on one host (different ports). Browsers do not separate cookies by
port, so every service names its cookies after itself: ``cb_<service>_access``,
``cb_<service>_refresh`` and ``cb_<service>_csrf`` (``<service>`` as given to ``create_app``,
e.g. ``cb_order-intake_access``; ``-`` is allowed in a cookie name).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from casebridge_shared.problems import Forbidden

CSRF_HEADER = "X-CSRF-Token"
CSRF_REFUSED = "CSRF token missing or wrong"
# Methods that change something: with the cookie they need the CSRF header (double submit).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_PATH = "/session"


@dataclass(frozen=True)
class SessionCookieNames:
    access: str
    refresh: str
    csrf: str

    @classmethod
    def for_service(cls, service: str) -> SessionCookieNames:
        return cls(access=f"cb_{service}_access", refresh=f"cb_{service}_refresh", csrf=f"cb_{service}_csrf")


def cookie_names(request: Request) -> SessionCookieNames | None:
    """The cookie names of the service answering ``request`` (None when the app was not made by
    ``create_app``: then there is no browser session)."""
    service: str | None = getattr(request.app.state, "service", None)
    return SessionCookieNames.for_service(service) if service else None


def check_csrf(request: Request, names: SessionCookieNames) -> None:
    """Double-submit check: the ``X-CSRF-Token`` header equals the CSRF cookie.

    Another site can make the browser send our cookies (SameSite=Strict already stops that in
    current browsers), but it can neither read the CSRF cookie nor set a custom header without
    our CORS consent, so a matching header proves the request came from our own page."""
    cookie = request.cookies.get(names.csrf, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise Forbidden(CSRF_REFUSED, field=CSRF_HEADER)


def access_token_from_cookie(request: Request) -> str | None:
    """The access token of the browser session, or None without the cookie.

    Unsafe methods must carry the CSRF header (403 otherwise); GET, HEAD and OPTIONS (an
    EventSource too) need only the cookie."""
    names = cookie_names(request)
    if names is None:
        return None
    token = request.cookies.get(names.access)
    if not token:
        return None
    if request.method.upper() in UNSAFE_METHODS:
        check_csrf(request, names)
    return token
