"""Identity: sign-up, tokens, JWKS, own profile, staff administration."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select

from casebridge_shared.auth import Department, Role
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container
from order_intake.db import outbox
from order_intake.identity.keys import rotate
from order_intake.identity.models import User

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


async def test_register_login_and_read_me(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/auth/register",
        json={
            "email": "Alice@Example.org",
            "password": PASSWORD,
            "full_name": "Alice",
            "phone": "+49 30 1234",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "alice@example.org"
    assert r.json()["roles"] == ["customer"]
    assert "password" not in r.text and "hash" not in r.text

    r = await client.post("/auth/token", data={"username": "alice@example.org", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0

    me = await client.get("/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["full_name"] == "Alice"
    assert me.headers["etag"] == '"1"'


async def test_token_carries_roles_department_and_verifies_with_jwks(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user(Role.DEPARTMENT, Department.FINANCE)
    r = await client.post("/auth/token", data={"username": user.email, "password": PASSWORD})
    token = r.json()["access_token"]
    jwks = (await client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert key["kty"] == "OKP" and "d" not in key  # never the private part
    claims = jwt.decode(
        token, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="casebridge", issuer="http://127.0.0.1:8001"
    )
    assert claims["sub"] == user.id
    assert claims["roles"] == ["department"]
    assert claims["department"] == "finance"


async def test_wrong_password_and_unknown_user_look_alike(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    user = await factory.customer()
    before = await count_rows(container.db, outbox.outbox)
    wrong = await client.post("/auth/token", data={"username": user.email, "password": "not-the-password"})
    unknown = await client.post(
        "/auth/token", data={"username": "nobody@example.org", "password": "whatever-pass"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == unknown.headers["content-type"] == PROBLEM
    assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong email or password"
    # Both failed logins are on record (the ledger consumes them), without the password.
    async with container.db.session() as s:
        rows = (await s.execute(select(outbox.outbox.c.payload).order_by(outbox.outbox.c.id))).scalars().all()
    assert await count_rows(container.db, outbox.outbox) == before + 2
    assert all("not-the-password" not in p for p in rows)
    assert "login-failed" in rows[-1] and "login-failed" in rows[-2]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "full_name": "X"}, "body.email"),
        ({"email": "a@example.org", "password": "short", "full_name": "X"}, "body.password"),
        ({"email": "a@example.org", "password": PASSWORD}, "body.full_name"),
        (
            {"email": "a@example.org", "password": PASSWORD, "full_name": "X", "roles": ["admin"]},
            "body.roles",
        ),
        ({"email": "a@example.org", "password": PASSWORD, "full_name": 12}, "body.full_name"),
    ],
)
async def test_register_rejects_bad_input(
    client: httpx.AsyncClient, container: Container, body: dict[str, object], field: str
) -> None:
    users, events = await count_rows(container.db, User), await count_rows(container.db, outbox.outbox)
    r = await client.post("/auth/register", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await count_rows(container.db, User) == users  # type: ignore[attr-defined]
    assert await count_rows(container.db, outbox.outbox) == events


async def test_register_rejects_bad_json_and_duplicates(
    client: httpx.AsyncClient, container: Container
) -> None:
    users = await count_rows(container.db, User)
    r = await client.post(
        "/auth/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "not valid JSON" in r.json()["detail"]
    body = {"email": "dup@example.org", "password": PASSWORD, "full_name": "Dup"}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    again = await client.post("/auth/register", json=body | {"email": "DUP@example.org"})
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "body.email"
    assert await count_rows(container.db, User) == users + 1  # type: ignore[attr-defined]


async def test_huge_body_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/auth/register",
        json={"email": "a@example.org", "password": PASSWORD, "full_name": "x" * 2_000_000},
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM


async def test_me_needs_a_valid_token(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.customer()
    assert (await client.get("/me")).status_code == 401
    assert (await client.get("/me", headers={"Authorization": "Bearer nonsense"})).status_code == 401
    expired = factory.token(user, lifetime=timedelta(minutes=-5))
    r = await client.get("/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert r.json()["detail"] == "token expired"
    good = factory.token(user)
    head, payload, sig = good.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}AAAA"
    assert (await client.get("/me", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
    forged = jwt.encode(
        {"sub": user.id, "roles": ["admin"]}, "not-our-key-" * 4, algorithm="HS256", headers={"kid": "x"}
    )
    assert (await client.get("/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_update_me_with_versions_and_password_change(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.customer()
    auth = factory.auth(user)
    r = await client.patch(
        "/me", json={"full_name": "Carla C.", "phone": "+43 1 555"}, headers=auth | {"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["full_name"] == "Carla C." and r.json()["version"] == 2
    stale = await client.patch("/me", json={"full_name": "Again"}, headers=auth | {"If-Match": '"1"'})
    assert stale.status_code == 412
    no_current = await client.patch("/me", json={"password": "a-brand-new-password"}, headers=auth)
    assert no_current.status_code == 422
    ok = await client.patch(
        "/me", json={"password": "a-brand-new-password", "current_password": PASSWORD}, headers=auth
    )
    assert ok.status_code == 200
    login = await client.post(
        "/auth/token", data={"username": user.email, "password": "a-brand-new-password"}
    )
    assert login.status_code == 200
    bad = await client.patch("/me", json={"email": "other@example.org"}, headers=auth)
    assert bad.status_code == 422  # email is not self-service


async def test_admin_creates_and_lists_staff(client: httpx.AsyncClient, factory: Factory) -> None:
    admin = await factory.user(Role.ADMIN)
    auth = factory.auth(admin)
    r = await client.post(
        "/users",
        json={
            "email": "fin@example.org",
            "password": PASSWORD,
            "full_name": "Fin",
            "roles": ["department"],
            "department": "finance",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert r.json()["department"] == "finance"
    r = await client.post(
        "/users",
        json={"email": "s@example.org", "password": PASSWORD, "full_name": "S", "roles": ["staff"]},
        headers=auth,
    )
    assert r.status_code == 201
    listed = await client.get("/users", params={"department": "finance"}, headers=auth)
    assert listed.status_code == 200
    assert [u["email"] for u in listed.json()["items"]] == ["fin@example.org"]
    staff = await client.get("/users", params={"role": "staff", "limit": 1}, headers=auth)
    assert staff.json()["total"] == 1 and len(staff.json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"roles": ["department"]}, "body.department"),
        ({"roles": ["staff"], "department": "sales"}, "body.department"),
        ({"roles": ["customer"]}, "body.roles"),
        ({"roles": ["janitor"]}, "body.roles.0"),
        ({"roles": []}, "body.roles"),
    ],
)
async def test_create_user_rejects_bad_roles(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, object], field: str
) -> None:
    admin = await factory.user(Role.ADMIN)
    r = await client.post(
        "/users",
        json={"email": "x@example.org", "password": PASSWORD, "full_name": "X"} | body,
        headers=factory.auth(admin),
    )
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF, Role.SUPERVISOR, Role.DEPARTMENT])
async def test_only_admins_manage_users(client: httpx.AsyncClient, factory: Factory, role: Role) -> None:
    user = (
        await factory.customer()
        if role is Role.CUSTOMER
        else await factory.user(role, Department.SALES if role is Role.DEPARTMENT else None)
    )
    auth = factory.auth(user)
    assert (await client.get("/users", headers=auth)).status_code == 403
    r = await client.post(
        "/users",
        json={"email": "y@example.org", "password": PASSWORD, "full_name": "Y", "roles": ["admin"]},
        headers=auth,
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == PROBLEM


async def test_key_rotation_keeps_old_tokens_valid(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    user = await factory.customer()
    old_token = factory.token(user)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    await rotate(container.db, container.keys.box)
    await container.keys.load()
    new_token = factory.token(user)
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid in kids and len(kids) == 2
    for token in (old_token, new_token):
        assert (await client.get("/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_bootstrap_admin_exists_after_start(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/auth/token", data={"username": "admin@casebridge.example", "password": "changethis"}
    )
    assert r.status_code == 200
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["admin"]


async def test_a_machine_client_s_etag_follows_its_changes_and_if_match_guards_them(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    admin = factory.auth(await factory.user(Role.ADMIN))
    body = {"client_id": "exporter", "roles": ["auditor"]}
    created = await client.post("/machine-clients", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.headers["etag"] == '"1"'
    url = "/machine-clients/exporter"
    read = await client.get(url, headers=admin)
    assert read.status_code == 200 and read.headers["etag"] == '"1"'

    stale = await client.post(f"{url}/rotate-secret", headers=admin | {"If-Match": '"5"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["errors"][0]["field"] == "header.If-Match"
    bad = await client.post(f"{url}/disable", headers=admin | {"If-Match": "nonsense"})
    assert bad.status_code == 412 and bad.json()["errors"][0]["field"] == "header.If-Match"
    assert (await client.get(url, headers=admin)).json()["active"] is True

    rotated = await client.post(f"{url}/rotate-secret", headers=admin | {"If-Match": '"1"'})
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["etag"] == '"2"' and rotated.json()["version"] == 2
    refused = await client.post(f"{url}/disable", headers=admin | {"If-Match": '"1"'})
    assert refused.status_code == 412
    disabled = await client.post(f"{url}/disable", headers=admin | {"If-Match": '"2"'})
    assert disabled.status_code == 200 and disabled.headers["etag"] == '"3"'
    assert disabled.json()["active"] is False
    # If-Match stays optional: the CLI and older clients send none.
    assert (await client.get(url, headers=admin)).headers["etag"] == '"3"'
