"""Issue 26 §3: the admin page picks team members by name from the notifier's staff directory."""

from __future__ import annotations

import httpx
import pytest

from .conftest import People


async def test_admins_list_the_staff_the_notifier_knows(client: httpx.AsyncClient, people: People) -> None:
    sam = await people.add("staff", name="Sam Staff")
    sue = await people.add("supervisor", name="Sue Supervisor", active=False)
    ada = await people.add("admin", name="Ada Admin")
    await people.add("customer", name="Carla Customer")
    await people.add("department", name="Fin Clerk")
    r = await client.get("/staff", headers=people.headers(ada))
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [p["user_id"] for p in listed] == [ada.user_id, sam.user_id, sue.user_id]  # by name
    assert listed[2] == {
        "user_id": sue.user_id,
        "email": sue.email,
        "full_name": "Sue Supervisor",
        "roles": ["supervisor"],
        "active": False,
    }


@pytest.mark.parametrize("roles", [(), ("staff",), ("supervisor",), ("customer",), ("department",)])
async def test_only_admins_list_staff(
    client: httpx.AsyncClient, people: People, roles: tuple[str, ...]
) -> None:
    headers = people.headers("someone", *roles) if roles else {}
    r = await client.get("/staff", headers=headers)
    assert r.status_code == (403 if roles else 401)
    assert r.headers["content-type"] == "application/problem+json"
