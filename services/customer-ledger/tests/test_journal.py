"""The journal: appends, checkpoints and proofs an outsider can verify (issue 6, section 3)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from casebridge_shared import testing
from casebridge_shared.db import utcnow
from casebridge_shared.testing import TokenMinter
from customer_ledger.bootstrap import Container
from customer_ledger.journal import merkle, service
from customer_ledger.journal.models import JournalCheckpoint
from customer_ledger.journal.signed_note import Verifier, open_checkpoint


@pytest.fixture
def minter(app: FastAPI) -> TokenMinter:
    m = TokenMinter()
    app.state.token_verifier = m.verifier()
    return m


async def append(container: Container, *entries: dict[str, Any]) -> None:
    async with container.db.write_session() as session:
        await service.append(session, [("change", e) for e in entries])
        await session.commit()


def b64(value: str) -> bytes:
    return base64.b64decode(value)


async def checkpoint_of(client: httpx.AsyncClient) -> tuple[str, Any]:
    key = (await client.get("/ledger/public-key")).text.strip()
    r = await client.get("/ledger/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text, open_checkpoint(r.text, [Verifier.parse(key)])


async def test_checkpoints_and_proofs_verify_with_the_public_key_alone(
    container: Container, client: httpx.AsyncClient
) -> None:
    entries = [{"customer": f"c{i}", "field": "phone", "after": f"+49 {i}", "by": "admin"} for i in range(13)]
    await append(container, *entries[:7])
    _, first = await checkpoint_of(client)
    assert first.size == 7 and first.origin == container.settings.journal_origin
    await append(container, *entries[7:])
    note, second = await checkpoint_of(client)
    assert second.size == 13
    assert (await client.get("/ledger/checkpoint")).text == note  # same size, same checkpoint

    # The root in the checkpoint is the RFC 9162 root of the canonical entries, recomputed here.
    tree = merkle.MemoryTree()
    for entry in entries:
        tree.append(service.canonical(entry))
    assert second.root == tree.root()

    for index in (0, 6, 12):
        r = await client.get("/ledger/proofs/inclusion", params={"index": index, "tree_size": 13})
        assert r.status_code == 200
        proof = r.json()
        leaf = merkle.leaf_hash(service.canonical(entries[index]))
        assert b64(proof["leaf_hash"]) == leaf
        merkle.verify_inclusion(index, 13, leaf, [b64(h) for h in proof["hashes"]], second.root)

    r = await client.get("/ledger/proofs/consistency", params={"first": 7, "second": 13})
    assert r.status_code == 200
    merkle.verify_consistency(7, 13, first.root, second.root, [b64(h) for h in r.json()["hashes"]])

    # A rewritten past does not verify against what an outsider kept.
    forged = merkle.MemoryTree()
    for entry in [*entries[:3], {**entries[3], "after": "+49 rewritten"}, *entries[4:]]:
        forged.append(service.canonical(entry))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(7, 13, first.root, forged.root(), [b64(h) for h in r.json()["hashes"]])


async def test_entries_are_for_admins_and_bad_queries_get_a_clear_answer(
    container: Container, client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    await append(container, {"customer": "c1", "read": "payments", "by": "finance-1"})
    admin = minter.headers("admin-1", "admin")
    r = await client.get("/ledger/entries/0", headers=admin)
    assert r.status_code == 200
    body = r.json()
    assert body["entry"] == '{"by":"finance-1","customer":"c1","read":"payments"}'  # RFC 8785
    assert b64(body["leaf_hash"]) == merkle.leaf_hash(body["entry"].encode())
    assert (await client.get("/ledger/entries/0")).status_code == 401
    department = minter.headers("fin-1", "department", department="finance")
    assert (await client.get("/ledger/entries/0", headers=department)).status_code == 403
    r = await client.get("/ledger/entries/5", headers=admin)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")

    cases = [
        ("/ledger/proofs/inclusion", {"index": 1, "tree_size": 1}, "query.index"),
        ("/ledger/proofs/inclusion", {"index": 0, "tree_size": 9}, "query.tree_size"),
        ("/ledger/proofs/inclusion", {"index": -1, "tree_size": 1}, "index"),
        ("/ledger/proofs/consistency", {"first": 1, "second": 5}, "query.second"),
        ("/ledger/proofs/consistency", {"first": 5, "second": 5}, "query.second"),
        ("/ledger/proofs/consistency", {"first": 0, "second": 5}, "query.first"),
        ("/ledger/proofs/consistency", {"first": 2, "second": 1}, "query.first"),
        ("/ledger/proofs/consistency", {"first": 1, "second": 0}, "query.first"),
        ("/ledger/proofs/consistency", {"first": 0, "second": 1}, "query.first"),
        ("/ledger/proofs/consistency", {"first": "x", "second": 1}, "first"),
    ]
    for path, params, field in cases:
        r = await client.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in r.text, r.text


async def test_appends_from_many_batches_keep_one_sequence(container: Container) -> None:
    for batch in range(5):
        await append(container, *({"n": batch * 10 + i} for i in range(batch + 1)))
    async with container.db.session() as session:
        size = await service.tree_size(session)
        assert size == 15
        expected = merkle.MemoryTree()
        for batch in range(5):
            for i in range(batch + 1):
                expected.append(service.canonical({"n": batch * 10 + i}))
        assert await service.root(session, size) == expected.root()
        for first in range(1, size + 1):
            assert await service.consistency_proof(session, first, size) == expected.consistency_proof(
                first, size
            )


async def test_metrics_show_the_checkpoint_age_and_the_entries_after_it(
    container: Container, client: httpx.AsyncClient
) -> None:
    """What the ledger checkpoint alert reads (deploy/prometheus/alerts.yml, issue 27 section 5)."""

    async def gauges() -> tuple[float, float]:
        text = (await client.get("/metrics")).text
        return (
            testing.metric_value(text, "casebridge_ledger_entries_uncheckpointed", service="customer-ledger"),
            testing.metric_value(text, "casebridge_ledger_checkpoint_age_seconds", service="customer-ledger"),
        )

    assert await gauges() == (0, 0)  # an empty journal, no checkpoint yet
    await append(container, *({"customer": f"c{i}", "field": "phone", "by": "admin"} for i in range(3)))
    assert await gauges() == (3, 0)
    await checkpoint_of(client)
    await append(container, {"customer": "c9", "field": "phone", "by": "admin"})
    async with container.db.write_session() as session:  # the checkpoint, issued an hour ago
        await session.execute(update(JournalCheckpoint).values(issued_at=utcnow() - timedelta(hours=1)))
        await session.commit()
    after, age = await gauges()
    assert after == 1 and 3600 <= age < 3600 + 60
