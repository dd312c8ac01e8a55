"""Issue 25: refresh tokens rotate with reuse detection; admins disable, enable and revoke sessions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
from sqlalchemy import select

from casebridge_shared.auth import Role
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container
from order_intake.db import outbox, revocations
from order_intake.identity.models import RefreshToken

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    r = await client.post("/auth/token", data={"username": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def _field(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["field"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_access_tokens_are_short_and_refresh_tokens_rotate(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    user = await factory.customer()
    first = await _login(client, user.email)
    assert first["expires_in"] == 5 * 60  # the default access token lifetime
    assert first["refresh_token"] and first["refresh_expires_in"] == 14 * 24 * 3600
    async with container.db.session() as s:  # stored only as its hash
        hashes = (await s.execute(select(RefreshToken.token_hash))).scalars().all()
    assert first["refresh_token"] not in hashes and len(hashes) == 1

    r = await _refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/me", headers=_bearer(second["access_token"]))).status_code == 200
    r = await _refresh(client, second["refresh_token"])
    assert r.status_code == 200, r.text


async def test_a_reused_refresh_token_revokes_its_whole_family(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.customer()
    stolen = (await _login(client, user.email))["refresh_token"]
    other_session = (await _login(client, user.email))["refresh_token"]
    latest = (await _refresh(client, stolen)).json()["refresh_token"]  # the user refreshes

    replay = await _refresh(client, stolen)  # the thief replays the old one
    assert replay.status_code == 401
    assert replay.headers["content-type"] == PROBLEM
    assert _field(replay) == "body.refresh_token"
    # The family is revoked: the user's current refresh token is refused too ...
    assert (await _refresh(client, latest)).status_code == 401
    # ... but another sign-in (another family) goes on.
    assert (await _refresh(client, other_session)).status_code == 200


async def test_bad_refresh_requests_are_problems(client: httpx.AsyncClient) -> None:
    r = await _refresh(client, "never-issued")
    assert r.status_code == 401 and _field(r) == "body.refresh_token"
    r = await client.post("/auth/token", data={"grant_type": "refresh_token"})
    assert r.status_code == 422 and _field(r) == "body.refresh_token"
    r = await client.post("/auth/token", data={"username": "a@example.org"})
    assert r.status_code == 422 and _field(r) == "body.password"
    r = await client.post("/auth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 422


async def test_an_admin_disables_and_enables_a_user(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = await factory.user(Role.ADMIN)
    staff = await factory.user(Role.STAFF)
    session = await _login(client, staff.email)
    assert (await client.get("/me", headers=_bearer(session["access_token"]))).status_code == 200
    events_before = await count_rows(container.db, outbox.outbox)

    r = await client.post(f"/users/{staff.id}/disable", headers=factory.auth(admin))
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False

    me = await client.get("/me", headers=_bearer(session["access_token"]))
    assert me.status_code == 401 and "disabled" in me.json()["detail"]
    assert (await _refresh(client, session["refresh_token"])).status_code == 401
    login = await client.post("/auth/token", data={"username": staff.email, "password": PASSWORD})
    assert login.status_code == 401
    # The event every other service keeps, and this service's own list.
    async with container.db.session() as s:
        rows = (
            await s.execute(
                select(outbox.outbox.c.event_type, outbox.outbox.c.payload).order_by(outbox.outbox.c.id)
            )
        ).all()
        kept = (await s.execute(select(revocations).where(revocations.c.user_id == staff.id))).one()
    disabled = [json.loads(p)["data"] for t, p in rows if t.endswith("user-disabled.v1")]
    assert len(disabled) == 1 and disabled[0]["user_id"] == staff.id and disabled[0]["active"] is False
    assert disabled[0]["sessions_not_before"] is not None
    assert kept.active is False and await count_rows(container.db, outbox.outbox) > events_before

    r = await client.post(f"/users/{staff.id}/enable", headers=factory.auth(admin))
    assert r.status_code == 200 and r.json()["active"] is True
    # Tokens from before stay refused; a new sign-in works at once.
    assert (await client.get("/me", headers=_bearer(session["access_token"]))).status_code == 401
    fresh = await _login(client, staff.email)
    assert (await client.get("/me", headers=_bearer(fresh["access_token"]))).status_code == 200


async def test_disabling_refuses_what_does_not_fit(client: httpx.AsyncClient, factory: Factory) -> None:
    admin = await factory.user(Role.ADMIN)
    staff = await factory.user(Role.STAFF)
    r = await client.post(f"/users/{admin.id}/disable", headers=factory.auth(admin))
    assert r.status_code == 409 and _field(r) == "path.user_id"
    r = await client.post("/users/no-such-user/disable", headers=factory.auth(admin))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    for action in ("disable", "enable", "revoke-sessions"):
        r = await client.post(f"/users/{admin.id}/{action}", headers=factory.auth(staff))
        assert r.status_code == 403, action
        assert (await client.post(f"/users/{staff.id}/{action}")).status_code == 401


async def test_revoked_sessions_are_refused_and_a_new_sign_in_works_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    admin = await factory.user(Role.ADMIN)
    customer = await factory.customer()
    old = await _login(client, customer.email)
    r = await client.post(f"/users/{customer.id}/revoke-sessions", headers=factory.auth(admin))
    assert r.status_code == 200 and r.json()["active"] is True

    me = await client.get("/me", headers=_bearer(old["access_token"]))
    assert me.status_code == 401 and "revoked" in me.json()["detail"]
    assert (await _refresh(client, old["refresh_token"])).status_code == 401
    new = await _login(client, customer.email)  # in the same second as the revocation, too
    assert jwt.decode(new["access_token"], options={"verify_signature": False})["iat"] >= int(
        jwt.decode(old["access_token"], options={"verify_signature": False})["iat"]
    )
    assert (await client.get("/me", headers=_bearer(new["access_token"]))).status_code == 200
    assert (await _refresh(client, new["refresh_token"])).status_code == 200
