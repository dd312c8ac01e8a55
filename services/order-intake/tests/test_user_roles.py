"""Issue 26 §3: an admin changes a staff user's roles (PUT /users/{id}/roles, RolesChanged)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from casebridge_shared.auth import Department, Role
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container
from order_intake.db import outbox

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


async def _events(container: Container) -> list[tuple[str, dict[str, Any]]]:
    async with container.db.session() as s:
        rows = (
            await s.execute(
                select(outbox.outbox.c.event_type, outbox.outbox.c.payload).order_by(outbox.outbox.c.id)
            )
        ).all()
    return [(t, json.loads(p)["data"]) for t, p in rows]


async def _put(
    client: httpx.AsyncClient, user_id: str, body: Any, headers: dict[str, str], version: int | None = 1
) -> httpx.Response:
    if version is not None:
        headers = headers | {"If-Match": f'"{version}"'}
    return await client.put(f"/users/{user_id}/roles", json=body, headers=headers)


async def test_an_admin_promotes_a_staff_user_and_the_event_says_so(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = await factory.user(Role.ADMIN)
    staff = await factory.user(Role.STAFF)
    token = (await client.post("/auth/token", data={"username": staff.email, "password": PASSWORD})).json()

    r = await _put(client, staff.id, {"roles": ["staff", "supervisor"]}, factory.auth(admin))
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == ["staff", "supervisor"] and r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    changed = [d for t, d in await _events(container) if t.endswith("roles-changed.v1")]
    assert len(changed) == 1
    assert changed[0]["user_id"] == staff.id and changed[0]["roles"] == ["staff", "supervisor"]
    assert changed[0]["version"] == 2
    # A right was added, none taken: the user's session goes on (the next refresh carries the role).
    me = await client.get("/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200
    r = await client.get(f"/users/{staff.id}", headers=factory.auth(admin))
    assert r.status_code == 200 and r.json()["roles"] == ["staff", "supervisor"]

    # The same roles again change nothing and emit nothing.
    before = await count_rows(container.db, outbox.outbox)
    r = await _put(client, staff.id, {"roles": ["supervisor", "staff"]}, factory.auth(admin), version=2)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert await count_rows(container.db, outbox.outbox) == before


async def test_taking_a_role_away_revokes_the_users_sessions(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = await factory.user(Role.ADMIN)
    clerk = await factory.user(Role.DEPARTMENT, Department.SALES)
    token = (await client.post("/auth/token", data={"username": clerk.email, "password": PASSWORD})).json()

    r = await _put(client, clerk.id, {"roles": ["department"], "department": "finance"}, factory.auth(admin))
    assert r.status_code == 200, r.text
    assert r.json()["department"] == "finance" and r.json()["version"] == 3
    kinds = [t.rsplit(".", 2)[-2] for t, d in await _events(container) if d.get("user_id") == clerk.id]
    assert kinds[-2:] == ["roles-changed", "sessions-revoked"]
    # The token issued for the sales desk is refused; a new sign-in carries the finance desk.
    me = await client.get("/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 401
    refreshed = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 401
    fresh = await client.post("/auth/token", data={"username": clerk.email, "password": PASSWORD})
    assert fresh.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"roles": []}, 422, "body.roles"),
        ({"roles": ["janitor"]}, 422, "body.roles.0"),
        ({"roles": ["customer"]}, 422, "body.roles"),
        ({"roles": ["service"]}, 422, "body.roles"),
        ({"roles": ["department"]}, 422, "body.department"),
        ({"roles": ["staff"], "department": "sales"}, 422, "body.department"),
        ({"roles": ["staff"], "colour": "red"}, 422, "body.colour"),
        ({"roles": "staff"}, 422, "body.roles"),
    ],
)
async def test_bad_roles_are_refused_and_nothing_changes(
    client: httpx.AsyncClient,
    factory: Factory,
    container: Container,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    admin = await factory.user(Role.ADMIN)
    staff = await factory.user(Role.STAFF)
    before = await count_rows(container.db, outbox.outbox)
    r = await _put(client, staff.id, body, factory.auth(admin))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await count_rows(container.db, outbox.outbox) == before
    r = await client.get(f"/users/{staff.id}", headers=factory.auth(admin))
    assert r.json()["roles"] == ["staff"] and r.json()["version"] == 1


async def test_roles_changes_that_do_not_fit_are_problems(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    admin = await factory.user(Role.ADMIN)
    staff = await factory.user(Role.STAFF)
    customer = await factory.customer()
    auth = factory.auth(admin)
    before = await count_rows(container.db, outbox.outbox)

    r = await _put(client, "no-such-user", {"roles": ["staff"]}, auth)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert (await client.get("/users/no-such-user", headers=auth)).status_code == 404
    r = await _put(client, customer.id, {"roles": ["staff"]}, auth)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "path.user_id"
    r = await _put(client, admin.id, {"roles": ["staff"]}, auth)  # locking oneself out
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "body.roles"
    r = await _put(client, staff.id, {"roles": ["supervisor"]}, auth, version=None)
    assert r.status_code == 428 and r.json()["errors"][0]["field"] == "header.If-Match"
    r = await _put(client, staff.id, {"roles": ["supervisor"]}, auth, version=7)  # someone else changed it
    assert r.status_code == 412 and r.json()["errors"][0]["field"] == "header.If-Match"
    r = await client.put(
        f"/users/{staff.id}/roles", content=b"{not json", headers=auth | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert await count_rows(container.db, outbox.outbox) == before


@pytest.mark.parametrize("role", [None, Role.CUSTOMER, Role.STAFF, Role.SUPERVISOR, Role.DEPARTMENT])
async def test_only_admins_change_roles(
    client: httpx.AsyncClient, factory: Factory, container: Container, role: Role | None
) -> None:
    staff = await factory.user(Role.STAFF)
    headers: dict[str, str] = {}
    if role is Role.CUSTOMER:
        headers = factory.auth(await factory.customer())
    elif role is not None:
        headers = factory.auth(
            await factory.user(role, Department.SALES if role is Role.DEPARTMENT else None)
        )
    before = await count_rows(container.db, outbox.outbox)
    r = await _put(client, staff.id, {"roles": ["admin"]}, headers)
    assert r.status_code == (401 if role is None else 403)
    assert r.headers["content-type"] == PROBLEM
    assert (await client.get(f"/users/{staff.id}", headers=headers)).status_code == r.status_code
    assert await count_rows(container.db, outbox.outbox) == before
