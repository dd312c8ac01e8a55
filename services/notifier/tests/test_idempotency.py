"""Idempotency-Key on webhook creation: one subscription, its secret given again (issue 27)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from notifier.bootstrap import Container
from notifier.db import idempotent_requests
from notifier.deliveries.models import WebhookSubscription

from .conftest import People


async def webhooks(container: Container) -> int:
    async with container.db.session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(WebhookSubscription))).scalar_one()
        )


async def test_a_webhook_created_again_with_its_key_is_the_first_with_its_secret(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    keyed = {**people.headers("a", "admin"), "Idempotency-Key": "hook-1"}
    body = {"url": "https://crm.example/h"}
    first = await client.post("/webhooks", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    again = await client.post("/webhooks", json=body, headers=keyed)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"] == '"1"'
    assert await webhooks(container) == 1
    # The kept answer holds the secret sealed, never in the clear.
    async with container.db.session() as session:
        kept = (await session.execute(select(idempotent_requests.c.response))).scalar_one()
    assert kept["id"] == first.json()["id"] and secret not in str(kept)

    other = await client.post("/webhooks", json={"url": "https://crm.example/other"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await webhooks(container) == 1


async def test_the_same_key_at_once_creates_one_webhook(
    client: httpx.AsyncClient, container: Container, people: People
) -> None:
    keyed = {**people.headers("a", "admin"), "Idempotency-Key": "at-once"}
    answers = await asyncio.gather(
        *(client.post("/webhooks", json={"url": "https://crm.example/h"}, headers=keyed) for _ in range(4))
    )
    assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    assert await webhooks(container) == 1


async def test_a_bad_key_is_a_problem(client: httpx.AsyncClient, people: People) -> None:
    r = await client.post(
        "/webhooks",
        json={"url": "https://crm.example/h"},
        headers={**people.headers("a", "admin"), "Idempotency-Key": "k" * 201},
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "header.Idempotency-Key" in [e["field"] for e in r.json()["errors"]]
