"""Issue 26: password reset by email, and changing one's own password (POST /me/password)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from casebridge_shared.db import utcnow
from casebridge_shared.devmail import MailFolder
from casebridge_shared.testing import count_rows, wait_until
from order_intake.bootstrap import Container
from order_intake.db import outbox
from order_intake.identity.models import PasswordReset, RefreshToken, User
from order_intake.settings import Settings

from .conftest import PASSWORD, Factory

PROBLEM = "application/problem+json"
NEW_PASSWORD = "a-whole-new-passphrase"
LINK = re.compile(r"http://portal\.example/portal/reset-password\?token=([A-Za-z0-9_-]+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Catcher:
    folder: Path
    port: int


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[Catcher]:
    """The development mail catcher (aiosmtpd with casebridge_shared.devmail.MailFolder), for real."""
    found = Catcher(tmp_path / "mail", _free_port())
    controller = Controller(MailFolder(found.folder), hostname="127.0.0.1", port=found.port)
    controller.start()
    try:
        yield found
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Settings, catcher: Catcher) -> Settings:
    # order-intake sends its mail to the catcher; links point at the portal's public address.
    return settings.model_copy(update={"smtp_port": catcher.port, "portal_url": "http://portal.example/"})


def _mails(folder: Path) -> list[EmailMessage]:
    return [
        cast(EmailMessage, message_from_bytes(p.read_bytes(), policy=default))
        for p in sorted(folder.glob("*.eml"))
    ]


def _token_in(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found, body.get_content()
    return found.group(1)


async def _reset_mail(folder: Path, count: int) -> EmailMessage:
    await wait_until(lambda: len(list(folder.glob("*.eml"))) >= count, message=f"{count} mail(s)")
    return _mails(folder)[count - 1]


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


def _field(r: httpx.Response) -> str:
    assert r.headers["content-type"] == PROBLEM, r.text
    return str(r.json()["errors"][0]["field"])


async def _ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/auth/password-reset", json={"email": email})


async def test_a_customer_resets_a_forgotten_password_with_the_emailed_link(
    client: httpx.AsyncClient, factory: Factory, container: Container, catcher: Catcher
) -> None:
    customer = await factory.customer(full_name="Rosa Reset")
    old = (await _login(client, customer.email)).json()
    events_before = await count_rows(container.db, outbox.outbox)

    r = await _ask(client, customer.email.upper())  # the email as typed, any case
    assert r.status_code == 202, r.text
    mail = await _reset_mail(catcher.folder, 1)
    assert mail["To"] == f"Rosa Reset <{customer.email}>"
    assert "30 minutes" in mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    token = _token_in(mail)
    async with container.db.session() as s:  # only the token's hash is kept
        stored = (await s.execute(select(PasswordReset))).scalars().one()
    assert stored.token_hash != token and token not in stored.token_hash
    assert timedelta(minutes=29) < stored.expires_at - stored.created_at <= timedelta(minutes=30)

    r = await client.post("/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert r.status_code == 204, r.text
    # The new password signs in, the old one does not; every earlier session is over.
    assert (await _login(client, customer.email)).status_code == 401
    assert (await _login(client, customer.email, NEW_PASSWORD)).status_code == 200
    me = await client.get("/me", headers={"Authorization": f"Bearer {old['access_token']}"})
    assert me.status_code == 401
    refreshed = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": old["refresh_token"]}
    )
    assert refreshed.status_code == 401
    async with container.db.session() as s:
        live = (
            (
                await s.execute(
                    select(RefreshToken).where(
                        RefreshToken.user_id == customer.id,
                        RefreshToken.revoked_at.is_(None),  # type: ignore[union-attr]
                    )
                )
            )
            .scalars()
            .all()
        )
        types = (
            (await s.execute(select(outbox.outbox.c.event_type).order_by(outbox.outbox.c.id))).scalars().all()
        )
    assert len(live) == 1  # only the sign-in after the reset
    assert await count_rows(container.db, outbox.outbox) > events_before
    assert "casebridge.identity.sessions-revoked.v1" in types  # every service drops the old tokens

    # The link is burned.
    r = await client.post(
        "/auth/password-reset/confirm", json={"token": token, "new_password": "yet-another-passphrase"}
    )
    assert r.status_code == 422 and _field(r) == "body.token"


async def test_the_answer_is_the_same_for_unknown_emails_and_nothing_is_sent(
    client: httpx.AsyncClient, factory: Factory, container: Container, catcher: Catcher
) -> None:
    customer = await factory.customer()
    unknown = await _ask(client, "nobody-here@example.org")
    known = await _ask(client, customer.email)
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    await _reset_mail(catcher.folder, 1)
    assert [m["To"] for m in _mails(catcher.folder)] == [f"Carla Customer <{customer.email}>"]
    assert await count_rows(container.db, PasswordReset.__table__) == 1  # type: ignore[attr-defined]


async def test_a_disabled_account_gets_no_link(
    client: httpx.AsyncClient, factory: Factory, container: Container, catcher: Catcher
) -> None:
    customer = await factory.customer()
    async with container.db.write_session() as s:
        await s.execute(update(User).where(User.id == customer.id).values(active=False))  # type: ignore[arg-type]
        await s.commit()
    assert (await _ask(client, customer.email)).status_code == 202
    assert await count_rows(container.db, PasswordReset.__table__) == 0  # type: ignore[attr-defined]


async def test_bad_expired_and_replaced_links_are_refused_and_change_nothing(
    client: httpx.AsyncClient, factory: Factory, container: Container, catcher: Catcher
) -> None:
    customer = await factory.customer()
    await _ask(client, customer.email)
    first = _token_in(await _reset_mail(catcher.folder, 1))
    await _ask(client, customer.email)
    second = _token_in(await _reset_mail(catcher.folder, 2))
    events_before = await count_rows(container.db, outbox.outbox)

    async def confirm(token: str, password: str = NEW_PASSWORD) -> httpx.Response:
        return await client.post(
            "/auth/password-reset/confirm", json={"token": token, "new_password": password}
        )

    for token in (first, "never-issued", second + "x"):  # replaced by the newer link, made up, altered
        r = await confirm(token)
        assert r.status_code == 422 and _field(r) == "body.token", token
    # A password the policy refuses: a problem on that field, and the link stays good.
    r = await confirm(second, "short")
    assert r.status_code == 422 and _field(r) == "body.new_password"
    local = customer.email.split("@")[0]
    r = await confirm(second, f"{local}-is-my-password")
    assert r.status_code == 422 and _field(r) == "body.new_password"
    r = await client.post("/auth/password-reset/confirm", json={"token": second})
    assert r.status_code == 422 and _field(r) == "body.new_password"
    r = await client.post(
        "/auth/password-reset/confirm", json={"token": second, "new_password": NEW_PASSWORD, "x": 1}
    )
    assert r.status_code == 422
    assert await count_rows(container.db, outbox.outbox) == events_before  # nothing half-written
    assert (await _login(client, customer.email)).status_code == 200

    # Expired: 30 minutes are over.
    async with container.db.write_session() as s:
        await s.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))
        await s.commit()
    r = await confirm(second)
    assert r.status_code == 422 and _field(r) == "body.token"
    assert (await _login(client, customer.email)).status_code == 200


async def test_bad_requests_for_a_link_are_problems(client: httpx.AsyncClient, catcher: Catcher) -> None:
    for body in ({}, {"email": "not-an-email"}, {"email": "a@example.org", "extra": 1}):
        r = await client.post("/auth/password-reset", json=body)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == PROBLEM


async def test_asking_for_links_is_throttled_like_logins(
    client: httpx.AsyncClient, factory: Factory, catcher: Catcher
) -> None:
    customer = await factory.customer()
    answers = [(await _ask(client, customer.email)).status_code for _ in range(6)]
    assert answers[:5] == [202] * 5 and answers[5] == 429
    # An unknown email is throttled the same way (no enumeration through 429 either).
    answers = [(await _ask(client, "ghost@example.org")).status_code for _ in range(6)]
    assert answers[:5] == [202] * 5 and answers[5] == 429
    # Asking for links does not lock the account's sign-in.
    assert (await _login(client, customer.email)).status_code == 200


async def test_the_mail_never_reaches_the_log(
    client: httpx.AsyncClient, factory: Factory, catcher: Catcher, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = await factory.customer()
    await _ask(client, customer.email)
    token = _token_in(await _reset_mail(catcher.folder, 1))
    await client.post("/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    out = capsys.readouterr()
    assert token not in out.out and token not in out.err


# --- POST /me/password ---------------------------------------------------------------------


async def test_a_user_changes_their_password_and_every_session_ends(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    session = (await _login(client, customer.email)).json()
    bearer = {"Authorization": f"Bearer {session['access_token']}"}
    r = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer
    )
    assert r.status_code == 204, r.text
    assert (await client.get("/me", headers=bearer)).status_code == 401
    assert (await _login(client, customer.email)).status_code == 401
    assert (await _login(client, customer.email, NEW_PASSWORD)).status_code == 200


async def test_changing_a_password_refuses_what_does_not_fit(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    events_before = await count_rows(container.db, outbox.outbox)

    async def change(body: dict[str, Any], headers: dict[str, str] | None = auth) -> httpx.Response:
        return await client.post("/me/password", json=body, headers=headers or {})

    r = await change({"current_password": "wrong-password-here", "new_password": NEW_PASSWORD})
    assert r.status_code == 403 and _field(r) == "body.current_password"
    r = await change({"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422 and _field(r) == "body.new_password"
    r = await change({"current_password": PASSWORD, "new_password": PASSWORD})
    assert r.status_code == 422 and _field(r) == "body.new_password"
    r = await change(
        {"current_password": PASSWORD, "new_password": customer.email.split("@")[0] + "-secret-pw"}
    )
    assert r.status_code == 422 and _field(r) == "body.new_password"
    r = await change({"new_password": NEW_PASSWORD})
    assert r.status_code == 422 and _field(r) == "body.current_password"
    r = await change({"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=None)
    assert r.status_code == 401
    assert await count_rows(container.db, outbox.outbox) == events_before  # nothing half-written
    assert (await _login(client, customer.email)).status_code == 200


async def test_guessing_the_current_password_is_throttled(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    answers = [
        (
            await client.post(
                "/me/password",
                json={"current_password": f"guess-number-{i}", "new_password": NEW_PASSWORD},
                headers=auth,
            )
        ).status_code
        for i in range(6)
    ]
    assert answers[:5] == [403] * 5 and answers[5] == 429


# --- PATCH /me (name, phone) ---------------------------------------------------------------


async def test_profile_changes_are_validated_and_announced(
    client: httpx.AsyncClient, factory: Factory, container: Container
) -> None:
    customer = await factory.customer()
    auth = factory.auth(customer)
    events_before = await count_rows(container.db, outbox.outbox)
    for body, field in (
        ({"full_name": ""}, "body.full_name"),
        ({"full_name": "   "}, "body.full_name"),
        ({"full_name": None}, "body.full_name"),
        ({"full_name": "x" * 201}, "body.full_name"),
        ({"phone": "call me maybe"}, "body.phone"),
        ({"phone": "12"}, "body.phone"),
        ({"email": "other@example.org"}, "body.email"),
    ):
        r = await client.patch("/me", json=body, headers=auth)
        assert r.status_code == 422, body
        assert _field(r) == field, body
    assert await count_rows(container.db, outbox.outbox) == events_before

    r = await client.patch("/me", json={"full_name": "  Carla Neu ", "phone": "+49 30 987"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["full_name"] == "Carla Neu" and r.json()["version"] == 2
    async with container.db.session() as s:
        rows = (
            await s.execute(
                select(outbox.outbox.c.event_type, outbox.outbox.c.payload).order_by(outbox.outbox.c.id)
            )
        ).all()
    updated = [json.loads(p)["data"] for t, p in rows if t == "casebridge.identity.user-updated.v1"]
    assert updated[-1]["full_name"] == "Carla Neu" and updated[-1]["phone"] == "+49 30 987"
    assert updated[-1]["version"] == 2

    # The same again changes nothing: no new version, no event.
    r = await client.patch("/me", json={"full_name": "Carla Neu"}, headers=auth)
    assert r.status_code == 200 and r.json()["version"] == 2
    r = await client.patch("/me", json={"phone": None}, headers=auth)  # the phone is removed
    assert r.status_code == 200 and r.json()["phone"] is None and r.json()["version"] == 3
