"""Issue 26 §3 "Demo data": the `make up` banner gives one login per person and the page to open."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
from sqlmodel import select

from casebridge_shared.auth import Department, Role
from casebridge_shared.devstack import Service, _banner, login_pages
from order_intake.bootstrap import Container
from order_intake.demo import DEMO_PASSWORD, seed
from order_intake.identity.models import User
from order_intake.identity.passwords import password_problem

SERVICES = [
    Service("order-intake", True),
    Service("case-handling", True),
    Service("notifier", True),
    Service("customer-ledger", True),
]


async def test_every_banner_login_signs_in_with_the_role_its_page_needs(
    client: httpx.AsyncClient, container: Container
) -> None:
    logins: list[Any] = list(await seed(container))
    people = [login["role"] for login in logins]
    assert people == [
        "admin",
        "staff",
        "supervisor",
        "auditor",
        *[d.value for d in Department],
        "customer",
    ]
    banner = _banner(SERVICES, logins, "127.0.0.1:19092", None)
    for login in logins:
        assert password_problem(login["password"], login["email"]) is None  # the policy holds
        assert f"{login['email']:<40} {login['password']}" in banner
        r = await client.post("/auth/token", data={"username": login["email"], "password": login["password"]})
        assert r.status_code == 200, (login["role"], r.text)
        claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
        role = login["role"]
        if role in {d.value for d in Department}:
            assert claims["roles"] == ["department"] and claims["department"] == role
        else:
            assert claims["roles"] == [role]  # the auditor too: trail and journal, no admin rights
        # The pages sign in with the browser session (POST /session), which answers the roles.
        session = await client.post("/session", json={"email": login["email"], "password": login["password"]})
        assert session.status_code == 200, (login["role"], session.text)
        assert session.json()["roles"] == claims["roles"]
        urls = login_pages(SERVICES, login)
        assert urls and all(url in banner for url in urls)
    pages = {login["role"]: login_pages(SERVICES, login) for login in logins}
    assert pages["customer"] == ["http://127.0.0.1:8001/portal/"]
    assert pages["staff"] == ["http://127.0.0.1:8002/console/", "http://127.0.0.1:8003/app/"]
    assert pages["admin"] == [
        "http://127.0.0.1:8001/admin/",
        "http://127.0.0.1:8003/admin/",
        "http://127.0.0.1:8004/workspace/",
    ]
    assert pages["finance"] == pages["auditor"] == ["http://127.0.0.1:8004/workspace/"]


async def test_seeding_twice_changes_nothing_and_no_admin_goes_unlisted(container: Container) -> None:
    first = await seed(container)
    assert await seed(container) == first
    listed = {login["email"] for login in first}
    async with container.db.session() as s:
        users = (await s.exec(select(User))).all()
    assert {u.email for u in users if Role.ADMIN.value in u.roles} <= listed
    assert {u.email for u in users} == listed
    assert {login["password"] for login in first} == {DEMO_PASSWORD}
