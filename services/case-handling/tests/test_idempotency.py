"""Idempotency-Key on the case's communications and solution: recorded once, answered again (issue 27)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from case_handling.bootstrap import Container
from case_handling.cases.models import Attachment, CaseEntry
from casebridge_shared.testing import TokenMinter
from casebridge_shared.testing.object_storage import stored_keys

CALL = {
    "channel": "phone",
    "direction": "outbound",
    "summary": "Explained the cap.",
    "occurred_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC).isoformat(),
    "customer_visible": True,
}


def staff(minter: TokenMinter, who: str = "staff-1") -> dict[str, str]:
    return minter.headers(who, "staff", name=f"Staff {who}", email=f"{who}@casebridge.example")


async def entries(container: Container, case_id: str, kind: str) -> int:
    async with container.db.session() as session:
        statement = (
            select(func.count())
            .select_from(CaseEntry)
            .where(CaseEntry.case_id == case_id, CaseEntry.kind == kind)
        )
        return int((await session.execute(statement)).scalar_one())


async def worked_case(client: httpx.AsyncClient, factory: Any, me: dict[str, str]) -> str:
    case = await factory.case()
    assert (await client.post(f"/cases/{case.id}/claim", headers=me)).status_code == 200
    assert (await client.post(f"/cases/{case.id}/start", headers=me)).status_code == 200
    return str(case.id)


async def test_a_communication_retried_with_its_key_is_recorded_once(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    me = staff(minter)
    case_id = await worked_case(client, factory, me)
    keyed = {**me, "Idempotency-Key": "call-1"}
    url = f"/cases/{case_id}/communications"
    first = await client.post(url, headers=keyed, json=CALL)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await client.post(url, headers=keyed, json=CALL)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert await entries(container, case_id, "communication") == 1

    other = await client.post(url, headers=keyed, json={**CALL, "summary": "Another call."})
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    # Without the key, the same contact twice is two entries, as before.
    assert (await client.post(url, headers=me, json=CALL)).status_code == 200
    assert await entries(container, case_id, "communication") == 2


async def test_the_same_solution_posted_at_once_is_proposed_once(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    me = staff(minter)
    case_id = await worked_case(client, factory, me)
    keyed = {**me, "Idempotency-Key": "solution-1"}
    body = {"summary": "The increase is not allowed.", "text": "Under the rent cap ..."}
    answers = await asyncio.gather(
        *(client.post(f"/cases/{case_id}/solution", headers=keyed, json=body) for _ in range(4))
    )
    assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
    assert [a.status_code for a in answers].count(200) >= 1
    assert await entries(container, case_id, "solution") == 1
    retry = await client.post(f"/cases/{case_id}/solution", headers=keyed, json=body)
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["status"] == "solution_proposed"


async def test_a_bad_key_is_a_problem(client: httpx.AsyncClient, factory: Any, minter: TokenMinter) -> None:
    me = staff(minter)
    case_id = await worked_case(client, factory, me)
    for path, body in (("communications", CALL), ("solution", {"summary": "s", "text": "t"})):
        r = await client.post(f"/cases/{case_id}/{path}", headers={**me, "Idempotency-Key": ""}, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "header.Idempotency-Key" in [e["field"] for e in r.json()["errors"]]


async def test_an_attachment_uploaded_again_with_its_key_is_stored_once(
    client: httpx.AsyncClient, factory: Any, minter: TokenMinter, container: Container
) -> None:
    me = staff(minter)
    case_id = await worked_case(client, factory, me)
    keyed = {**me, "Idempotency-Key": "upload-1"}
    url = f"/cases/{case_id}/attachments"
    pdf = {"file": ("opinion.pdf", b"%PDF-1.7\n" + b"x" * 500, "application/pdf")}
    first = await client.post(url, headers=keyed, files=pdf, data={"visibility": "customer"})
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await client.post(url, headers=keyed, files=pdf, data={"visibility": "customer"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"] == f"{url}/{first.json()['id']}"
    # One file kept (the retry's copy is dropped), one row, one timeline entry.
    assert len(await stored_keys(container.attachments)) == 1
    async with container.db.session() as session:
        rows = int((await session.execute(select(func.count()).select_from(Attachment))).scalar_one())
    assert rows == 1

    # The same key with another visibility, or another file, is a mistake.
    other = await client.post(url, headers=keyed, files=pdf, data={"visibility": "internal"})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    txt = {"file": ("notes.txt", b"plain notes", "text/plain")}
    other_file = await client.post(url, headers=keyed, files=txt)
    assert (
        other_file.status_code == 422 and other_file.json()["errors"][0]["field"] == "header.Idempotency-Key"
    )
    too_long = await client.post(url, headers={**me, "Idempotency-Key": "k" * 201}, files=txt)
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert len(await stored_keys(container.attachments)) == 1
