"""Issue 25: the password policy (OWASP ASVS 5.0 V6.2) on sign-up, staff creation and profile changes."""

from __future__ import annotations

import httpx
import pytest

from casebridge_shared.auth import Role
from casebridge_shared.testing import count_rows
from order_intake.bootstrap import Container
from order_intake.db import outbox
from order_intake.identity.models import User
from order_intake.identity.passwords import common_passwords, password_problem

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"


def test_the_common_password_list_is_loaded_and_our_test_passwords_pass() -> None:
    common = common_passwords()
    assert len(common) > 29_000
    assert {"password", "123456", "qwerty123456", "1qaz2wsx3edc"} <= common
    assert password_problem(PASSWORD, "carla@example.org") is None
    assert password_problem("casebridge-demo", "admin@demo.casebridge.example") is None  # make up's


WEAK = [
    (" " * 10, "at least 12"),
    (" " * 12, "blank"),
    ("0123456789", "at least 12"),
    ("1QAZ2WSX3EDC", "commonly used"),
    ("qwerty123456", "commonly used"),
    ("Carla.Customer-2026", "email"),
]


@pytest.mark.parametrize(("password", "reason"), WEAK)
async def test_registration_refuses_weak_passwords(
    client: httpx.AsyncClient, container: Container, password: str, reason: str
) -> None:
    users, events = await count_rows(container.db, User), await count_rows(container.db, outbox.outbox)
    r = await client.post(
        "/auth/register",
        json={"email": "carla.customer@example.org", "password": password, "full_name": "Carla"},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    errors = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert reason in errors["body.password"]
    assert await count_rows(container.db, User) == users
    assert await count_rows(container.db, outbox.outbox) == events


async def test_admins_and_profile_changes_follow_the_same_policy(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    admin = await factory.user(Role.ADMIN)
    r = await client.post(
        "/users",
        headers=factory.auth(admin),
        json={"email": "s@example.org", "password": "qwertyuiop123", "full_name": "S", "roles": ["staff"]},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.password"
    me = await factory.customer(email="frederick@example.org")
    for weak, reason in [("1q2w3e4r5t6y", "commonly used"), ("I am frederick!", "email")]:
        r = await client.patch(
            "/me", headers=factory.auth(me), json={"password": weak, "current_password": PASSWORD}
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "body.password"
        assert reason in r.json()["errors"][0]["reason"]
    login = await client.post("/auth/token", data={"username": me.email, "password": PASSWORD})
    assert login.status_code == 200  # the password is unchanged
