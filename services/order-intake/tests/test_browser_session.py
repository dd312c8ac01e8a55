"""Issue 26: browser sign-in at order-intake's own /session (cookies + CSRF, the password checked
here through the same service code as /auth/token, so login throttling applies)."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import FastAPI

from casebridge_shared.auth import Role

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"
ACCESS, REFRESH, CSRF = "cb_order-intake_access", "cb_order-intake_refresh", "cb_order-intake_csrf"


def _set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    found: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name in jar:
            found[name] = jar
    return found


def _csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get(CSRF, path="/") or ""}


async def _sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/session", json={"email": email, "password": password})


async def test_sign_in_sets_three_cookies_with_safe_flags(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.customer()
    response = await _sign_in(client, user.email)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"] == user.id and body["email"] == user.email and body["roles"] == ["customer"]
    assert body["name"] == user.full_name
    assert response.headers["cache-control"] == "no-store"

    cookies = _set_cookies(response)
    access, refresh, csrf = cookies[ACCESS][ACCESS], cookies[REFRESH][REFRESH], cookies[CSRF][CSRF]
    assert access["httponly"] and access["samesite"] == "strict" and access["path"] == "/"
    assert refresh["httponly"] and refresh["samesite"] == "strict" and refresh["path"] == "/session"
    assert not csrf["httponly"] and csrf["samesite"] == "strict" and csrf["path"] == "/"
    # Served over plain http here: not Secure (the browser would drop a Secure cookie on http).
    assert not access["secure"] and not refresh["secure"] and not csrf["secure"]
    assert int(access["max-age"]) > 0 and int(refresh["max-age"]) > int(access["max-age"])

    # The access cookie alone authenticates safe requests.
    me = await client.get("/me")
    assert me.status_code == 200 and me.json()["id"] == user.id
    again = await client.get("/session")
    assert again.status_code == 200 and again.json()["subject"] == user.id


async def test_cookies_are_secure_over_https(app: FastAPI, factory: Factory) -> None:
    user = await factory.customer()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://order-intake") as client:
        response = await _sign_in(client, user.email)
    assert response.status_code == 200
    for name, jar in _set_cookies(response).items():
        assert jar[name]["secure"], name


async def test_unsafe_requests_by_cookie_need_the_csrf_header(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.customer()
    assert (await _sign_in(client, user.email)).status_code == 200
    change = {"full_name": "Carla Changed"}

    missing = await client.patch("/me", json=change)
    assert missing.status_code == 403
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json()["detail"] == "CSRF token missing or wrong"
    assert missing.json()["errors"][0]["field"] == "X-CSRF-Token"

    wrong = await client.patch("/me", json=change, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == "CSRF token missing or wrong"
    assert (await client.get("/me")).json()["full_name"] == user.full_name  # nothing written

    right = await client.patch("/me", json=change, headers=_csrf(client))
    assert right.status_code == 200 and right.json()["full_name"] == "Carla Changed"


async def test_a_bearer_token_needs_no_csrf_header(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.customer()
    response = await client.patch("/me", json={"full_name": "By Bearer"}, headers=factory.auth(user))
    assert response.status_code == 200


async def test_refresh_rotates_and_a_used_refresh_cookie_is_refused(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user(Role.STAFF)
    assert (await _sign_in(client, user.email)).status_code == 200
    old_refresh = client.cookies.get(REFRESH, path="/session")
    old_csrf = client.cookies.get(CSRF, path="/")

    no_csrf = await client.post("/session/refresh")
    assert no_csrf.status_code == 403

    refreshed = await client.post("/session/refresh", headers=_csrf(client))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["roles"] == ["staff"]
    assert client.cookies.get(REFRESH, path="/session") != old_refresh
    assert client.cookies.get(CSRF, path="/") != old_csrf

    # The old refresh token presented again is a reuse: refused, and its cookies cleared.
    transport = httpx.ASGITransport(app=app)  # a second browser that copied the old cookie
    async with httpx.AsyncClient(transport=transport, base_url="http://order-intake") as thief:
        thief.cookies.set(REFRESH, old_refresh or "", path="/session")
        thief.cookies.set(CSRF, "x", path="/")
        reused = await thief.post("/session/refresh", headers={"X-CSRF-Token": "x"})
    assert reused.status_code == 401 and reused.headers["content-type"] == PROBLEM
    cleared = _set_cookies(reused)
    assert set(cleared) == {ACCESS, REFRESH, CSRF}
    assert all(int(jar[name]["max-age"]) == 0 for name, jar in cleared.items())


async def test_refresh_without_a_refresh_cookie_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/session/refresh")
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM


async def test_sign_out_clears_the_cookies(app: FastAPI, client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.customer()
    assert (await _sign_in(client, user.email)).status_code == 200
    refresh_token = client.cookies.get(REFRESH, path="/session") or ""
    assert (await client.delete("/session")).status_code == 403  # CSRF applies to signing out too
    response = await client.delete("/session", headers=_csrf(client))
    assert response.status_code == 204
    assert set(_set_cookies(response)) == {ACCESS, REFRESH, CSRF}
    assert (await client.get("/session")).status_code == 401
    assert (await client.get("/me")).status_code == 401
    # Signing out when signed out is fine (idempotent).
    assert (await client.delete("/session")).status_code == 204
    # The session's refresh token was revoked: a copy of the cookie is worth nothing now.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://order-intake"
    ) as copy:
        copy.cookies.set(REFRESH, refresh_token, path="/session")
        copy.cookies.set(CSRF, "x", path="/")
        assert (await copy.post("/session/refresh", headers={"X-CSRF-Token": "x"})).status_code == 401
    refused = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    assert refused.status_code == 401


async def test_the_revocation_endpoint_answers_alike_for_any_token(client: httpx.AsyncClient) -> None:
    """RFC 7009: 200 for an unknown token too; a missing token is a 422 problem."""
    unknown = await client.post("/auth/revoke", data={"token": "never-issued"})
    assert unknown.status_code == 200 and unknown.headers["cache-control"] == "no-store"
    missing = await client.post("/auth/revoke", data={})
    assert missing.status_code == 422 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["errors"][0]["field"] == "body.token"


async def test_no_session_is_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/session")
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM


async def test_an_expired_or_forged_access_cookie_is_401(client: httpx.AsyncClient, factory: Factory) -> None:
    from datetime import timedelta

    user = await factory.customer()
    client.cookies.set(ACCESS, factory.token(user, lifetime=timedelta(seconds=-60)), path="/")
    expired = await client.get("/session")
    assert expired.status_code == 401 and expired.json()["detail"] == "token expired"
    client.cookies.set(ACCESS, "forged.token.value", path="/")
    assert (await client.get("/me")).status_code == 401


async def test_wrong_password_is_401_and_sets_no_cookie(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.customer()
    response = await _sign_in(client, user.email, "not the password")
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.org"}, "body.password"),
        ({"password": "x"}, "body.email"),
        ({"email": "a@example.org", "password": ""}, "body.password"),
        ({"email": "a@example.org", "password": "x", "extra": 1}, "body.extra"),
        ({"email": "a@example.org", "password": "p" * 257}, "body.password"),
    ],
)
async def test_bad_sign_in_input_is_422_problem(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/session", json=body)
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_a_form_post_from_another_site_cannot_sign_in(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """A cross-site HTML form can only send form encodings, which /session does not take."""
    user = await factory.customer()
    response = await client.post("/session", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 422 and "set-cookie" not in response.headers


async def test_sign_in_is_throttled_like_the_token_endpoint(app: FastAPI, factory: Factory) -> None:
    user = await factory.customer()
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://order-intake") as client:
        answers = [(await _sign_in(client, user.email, "wrong password")).status_code for _ in range(12)]
        assert 429 in answers, answers
        throttled = await _sign_in(client, user.email)  # even the right password waits now
    assert throttled.status_code == 429 and throttled.headers["content-type"] == PROBLEM
    assert int(throttled.headers["Retry-After"]) >= 1


async def test_an_admin_signed_in_by_browser_sees_hidden_products(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """The public catalog shows more to an admin, whether by bearer token or by session cookie."""
    await factory.product(title="Hidden", active=False)
    public = await client.get("/products", params={"active": "false"})
    assert public.json()["total"] == 0
    admin = await factory.user(Role.ADMIN)
    assert (await _sign_in(client, admin.email)).status_code == 200
    listed = await client.get("/products", params={"active": "false"})
    assert [p["title"] for p in listed.json()["items"]] == ["Hidden"]
