"""Logins and account changes from order-intake's identity events, on record once (B5, B8)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import IDENTITY_TOPIC, CloudEvent
from casebridge_shared.inbox import list_dead_letters
from casebridge_shared.testing import count_rows
from customer_ledger.access.models import LoginRecord
from customer_ledger.bootstrap import CONSUMER_GROUP, Container
from customer_ledger.db import inbox
from customer_ledger.journal import service as journal
from customer_ledger.journal.models import JournalEntry


def identity_event(kind: str, **data: Any) -> CloudEvent:
    now = datetime.now(UTC)
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/casebridge/order-intake",
        type=f"casebridge.identity.{kind}.v1",
        time=now,
        partitionkey=str(data.get("user_id") or data.get("email")),
        aggregateversion=1,
        data={"at": now.isoformat(), **data},
    )


async def publish(broker: EmbeddedBroker, *events: CloudEvent | bytes) -> None:
    await testing.publish(broker.bootstrap_servers, IDENTITY_TOPIC, *events, key="one-partition")


async def consume_until(container: Container, condition: Callable[[], Awaitable[bool]]) -> None:
    await testing.consume_until(container.consumer, condition, message="ledger consumer progress")


async def test_logins_are_recorded_once_in_the_journal_and_the_admin_query_is_itself_recorded(
    broker: EmbeddedBroker, container: Container, app: FastAPI, client: httpx.AsyncClient
) -> None:
    container.settings.kafka_bootstrap_servers = broker.bootstrap_servers
    minter = testing.TokenMinter()
    app.state.token_verifier = minter.verifier()
    user = {"user_id": "u-1", "email": "ada@example.org", "roles": ["customer"], "department": None}
    events = [
        identity_event("user-created", **user, full_name="Ada", phone=None, active=True, version=1),
        identity_event(
            "login-failed",
            user_id="u-1",
            email="ada@example.org",
            reason="wrong password",
            client_ip="203.0.113.9",
            user_agent="Firefox",
        ),
        identity_event("login-succeeded", **user, client_ip="203.0.113.9", user_agent="Firefox"),
        identity_event(
            "login-failed",
            user_id=None,
            email="nobody@example.org",
            reason="unknown user",
            client_ip="198.51.100.1",
            user_agent=None,
        ),
    ]
    await publish(broker, b"not json", *events)

    async def applied() -> bool:
        return await count_rows(container.db, inbox.inbox) == len(events)

    await consume_until(container, applied)
    assert len(await list_dead_letters(container.db, inbox, CONSUMER_GROUP)) == 1
    async with container.db.session() as s:
        entries = list((await s.execute(select(JournalEntry).order_by(JournalEntry.index))).scalars())
        records = list((await s.execute(select(LoginRecord).order_by(LoginRecord.journal_index))).scalars())
    assert [e.kind for e in entries] == ["account", "login", "login", "login"]
    assert [(r.outcome, r.email, r.journal_index) for r in records] == [
        ("failure", "ada@example.org", 1),
        ("success", "ada@example.org", 2),
        ("failure", "nobody@example.org", 3),
    ]
    assert json.loads(entries[1].body)["reason"] == "wrong password"
    assert "password" not in {k for e in entries for k in json.loads(e.body)}  # never a secret

    # Redelivered from the start: nothing recorded twice.
    await testing.reset_group_offsets(broker.bootstrap_servers, CONSUMER_GROUP, IDENTITY_TOPIC)
    late = identity_event("login-succeeded", **user, client_ip=None, user_agent=None)
    await publish(broker, late)

    async def late_applied() -> bool:
        return await count_rows(container.db, inbox.inbox) == len(events) + 1

    await consume_until(container, late_applied)
    assert await count_rows(container.db, LoginRecord) == 4
    assert await count_rows(container.db, JournalEntry) == 5

    admin = minter.headers("admin-1", "admin")
    r = await client.get(
        "/audit/logins", params={"email": "ADA@example.org", "outcome": "success"}, headers=admin
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 2 and {i["outcome"] for i in page["items"]} == {"success"}
    async with container.db.session() as s:
        size = await journal.tree_size(s)
        last = await journal.entry_at(s, size - 1)
    read = json.loads(last.body)
    assert last.kind == "read" and read["reader"]["subject"] == "admin-1" and read["what"] == "logins"
    assert read["query"]["email"] == "ADA@example.org"

    assert (await client.get("/audit/logins")).status_code == 401
    staff = minter.headers("s-1", "staff")
    assert (await client.get("/audit/logins", headers=staff)).status_code == 403
    r = await client.get("/audit/logins", params={"outcome": "maybe"}, headers=admin)
    assert r.status_code == 422 and "outcome" in r.text
    assert await count_rows(container.db, JournalEntry) == 6  # refused requests read nothing
