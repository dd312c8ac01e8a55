"""Tampering done directly in the database is found by `customer-ledger verify`, which names the
first bad index; a history rewritten and re-signed with the real key is caught by a kept
checkpoint, a kept export and the witness (issue 6, sections 3 and 4). A rewrite that also
deletes the checkpoints, a truncation, a removed unsigned tail and missing or out-of-order
checkpoints are caught against an anchor the auditor kept; without one `verify` refuses to
pass (issue 25, section 5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from typer.testing import CliRunner

from casebridge_shared import testing
from casebridge_shared.broker import EmbeddedBroker, free_port
from casebridge_shared.db import utcnow
from casebridge_shared.testing import ApiServer, TokenMinter
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.cli import app as cli
from customer_ledger.journal import audit, copies, service
from customer_ledger.journal.batcher import CheckpointBatcher
from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalHead, JournalNode
from customer_ledger.journal.witness import Witness
from customer_ledger.main import create_application
from customer_ledger.settings import Settings

CHECKPOINT_SIZES = (10, 25, 40)


def entry(i: int) -> dict[str, Any]:
    return {
        "type": "change",
        "customer": f"cust-{i:03d}",
        "field": "phone",
        "after": f"+49 30 {i:04d}",
        "by": "fin-1",
    }


async def append(container: Container, entries: list[dict[str, Any]]) -> None:
    async with container.db.write_session() as session:
        await service.append(session, [("change", e) for e in entries])
        await session.commit()


async def checkpoint(container: Container) -> str:
    async with container.uow() as uow:
        note = (await service.checkpoint(uow, container.signer)).note
    return note


async def build(
    container: Container, bodies: list[dict[str, Any]], sizes: tuple[int, ...] = CHECKPOINT_SIZES
) -> list[str]:
    """The journal of ``bodies`` with checkpoints at ``sizes`` (the rest after the last, unsigned);
    returns their notes."""
    notes, done = [], 0
    for size in sizes:
        if size > len(bodies):
            break
        await append(container, bodies[done:size])
        notes.append(await checkpoint(container))
        done = size
    if done < len(bodies):
        await append(container, bodies[done:])
    return notes


async def export_to(container: Container, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        await copies.export(container.db, f, container.signer.name)
    return path


def run_verify(*args: str) -> tuple[int, str]:
    # Wide, so an error box does not wrap a long file path (a non-terminal is 80 columns).
    result = CliRunner().invoke(cli, ["verify", *args], env={"COLUMNS": "500"})
    return result.exit_code, result.output


async def sql(container: Container, *statements: Any) -> None:
    async with container.db.write_session() as session:
        for statement in statements:
            await session.execute(statement)
        await session.commit()


async def body_of(container: Container, index: int) -> tuple[str, bytes]:
    async with container.db.session() as session:
        row = (await session.execute(select(JournalEntry).where(JournalEntry.index == index))).scalar_one()  # type: ignore[arg-type]
        return row.body, row.leaf_hash


async def changed(container: Container) -> None:
    body, _ = await body_of(container, 17)
    await sql(
        container,
        update(JournalEntry).where(JournalEntry.index == 17).values(body=body.replace("+49", "+41")),
    )  # type: ignore[arg-type]


async def deleted(container: Container) -> None:
    await sql(container, delete(JournalEntry).where(JournalEntry.index == 12))  # type: ignore[arg-type]


async def swapped(container: Container) -> None:
    # Whole rows swapped, leaf hashes included: each row is self-consistent, the order is not.
    a, b = await body_of(container, 20), await body_of(container, 21)
    await sql(
        container,
        update(JournalEntry).where(JournalEntry.index == 20).values(body=b[0], leaf_hash=b[1]),  # type: ignore[arg-type]
        update(JournalEntry).where(JournalEntry.index == 21).values(body=a[0], leaf_hash=a[1]),  # type: ignore[arg-type]
    )


async def truncated(container: Container) -> None:
    await sql(
        container,
        delete(JournalEntry).where(JournalEntry.index >= 30),  # type: ignore[arg-type]
        text('DELETE FROM journal_nodes WHERE ("index" + 1) * (1 << "level") > 30'),
        update(JournalHead).values(size=30),
    )


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [(changed, 17), (deleted, 12), (swapped, 20), (truncated, 30)],
    ids=["a byte changed", "an entry deleted", "two entries swapped", "the tail truncated"],
)
async def test_verify_names_the_first_bad_index(
    container: Container, tmp_path: Path, tamper: Callable[[Container], Awaitable[None]], first_bad: int
) -> None:
    await build(container, [entry(i) for i in range(40)])
    key = str(container.signer.verifier)
    good = await export_to(container, tmp_path / "good.jsonl")
    code, out = run_verify("--public-key", key, "--export", str(good), "--no-anchor")
    assert code == 0, out
    assert "OK: 40 entries" in out and "3 signed checkpoint(s) verified" in out

    await tamper(container)
    bad = await export_to(container, tmp_path / "bad.jsonl")
    # Damage the copy shows by itself fails even without an anchor, and with one.
    for anchor in ([], ["--anchor", str(good)]):
        code, out = run_verify("--public-key", key, "--export", str(bad), *anchor)
        assert code == 1, out
        assert f"FAILED: first bad index {first_bad}" in out, out


async def test_a_rewritten_history_re_signed_with_the_real_key_is_caught_by_what_outsiders_kept(
    settings: Settings, container: Container, tmp_path: Path
) -> None:
    original = [entry(i) for i in range(40)]
    notes = await build(container, original)
    key_file = tmp_path / "ledger.vkey"
    key_file.write_text(str(container.signer.verifier) + "\n")
    kept_checkpoint = tmp_path / "kept-checkpoint.txt"
    kept_checkpoint.write_text(notes[1])  # an auditor kept the checkpoint of size 25
    kept_export = await export_to(container, tmp_path / "kept.jsonl")

    # A database operator with the signing key rewrites entry 5 and recomputes everything.
    forged = [dict(e) for e in original]
    forged[5]["after"] = "+1 555 0100"
    await sql(
        container,
        delete(JournalEntry),
        delete(JournalNode),
        delete(JournalCheckpoint),
        update(JournalHead).values(size=0),
    )
    await build(container, forged)
    rewritten = await export_to(container, tmp_path / "rewritten.jsonl")

    # On its own the copy is consistent: that is what a re-signed rewrite looks like.
    code, out = run_verify("--public-key", str(key_file), "--export", str(rewritten), "--no-anchor")
    assert code == 0, out
    # The checkpoint kept earlier exposes it; the export kept earlier names the entry.
    code, out = run_verify(
        "--public-key", str(key_file), "--export", str(rewritten), "--kept-checkpoint", str(kept_checkpoint)
    )
    assert code == 1, out
    assert (
        "not consistent with the signed checkpoint in your kept checkpoint kept-checkpoint.txt (size 25)"
        in out
    ), out
    assert "the copy's checkpoint of size 25 is not the one your kept checkpoint" in out, out
    code, out = run_verify(
        "--public-key", str(key_file), "--export", str(rewritten), "--kept-export", str(kept_export)
    )
    assert code == 1 and "FAILED: first bad index 5" in out, out


async def test_verify_from_the_api_with_an_admin_token(container: Container, tmp_path: Path) -> None:
    minter = TokenMinter()
    await build(container, [entry(i) for i in range(25)])
    server = ApiServer(lambda: _app_with(container, minter), free_port())
    await server.start()
    try:
        token = minter.token("admin-1", "admin")
        copy = await asyncio.to_thread(copies.fetch, server.url, token)
        report = audit.verify(copy.entries, container.signer.verifier, checkpoints=copy.checkpoints)
        assert report.ok, report.findings
        assert report.size == 25 and report.checkpoints_checked == 2
        # The export's own reads are on record: the journal grew by the reads of the entries.
        async with container.db.session() as session:
            size = await service.tree_size(session)
        assert size == 26
        kept = tmp_path / "kept.txt"
        kept.write_text(copy.checkpoints[-1].note)
        code, out = await asyncio.to_thread(
            run_verify,
            "--public-key",
            str(container.signer.verifier),
            "--url",
            server.url,
            "--token",
            token,
            "--anchor",
            str(kept),
        )
        assert code == 0 and "OK: 26 entries" in out, out  # the second read is journaled after it
        assert "the entries extend it, RFC 9162 consistency proof 25 -> 26" in out, out
    finally:
        await server.stop()


def _app_with(container: Container, minter: TokenMinter) -> Any:
    return create_application(container.settings, container, minter.verifier())


def test_verify_refuses_bad_arguments(tmp_path: Path) -> None:
    code, out = run_verify("--public-key", "not-a-key", "--export", str(tmp_path / "x"))
    assert code == 2
    code, out = run_verify("--public-key", "k")
    assert code == 2 and "exactly one of --export and --url" in out
    missing = tmp_path / "missing.jsonl"
    key = "casebridge.example/customer-ledger+eba16f29+ATqrUPlzDT7lfbeEZDpSbYcROzoQXP/MEra1P0bvs+56"
    code, out = run_verify("--public-key", key, "--export", str(missing), "--no-anchor")
    assert code == 2 and "missing.jsonl" in out, out
    # An API that does not answer is not a tampered journal: its own exit code.
    code, out = run_verify("--public-key", key, "--url", f"http://127.0.0.1:{free_port()}", "--no-anchor")
    assert code == 4 and "UNREACHABLE: could not read the journal" in out, out


async def test_checkpoints_per_batch_by_size_and_by_time(container: Container) -> None:
    now = [utcnow()]
    batcher = CheckpointBatcher(
        container.db,
        container.uow,
        container.signer,
        every_entries=5,
        every_seconds=60,
        poll_seconds=1,
        clock=lambda: now[0],
    )
    assert await batcher.tick() is None  # nothing appended yet
    await append(container, [entry(i) for i in range(4)])
    first = await batcher.tick()
    assert first is not None and first.tree_size == 4  # the first checkpoint goes out at once
    await append(container, [entry(i) for i in range(4, 8)])
    assert await batcher.tick() is None  # 4 new: below the size bound, within the time bound
    await append(container, [entry(8)])
    issued = await batcher.tick()
    assert issued is not None and issued.tree_size == 9  # 5 new: the size bound
    await append(container, [entry(9)])
    assert await batcher.tick() is None
    now[0] += timedelta(seconds=61)
    late = await batcher.tick()
    assert late is not None and late.tree_size == 10  # the time bound
    # Each checkpoint was published through the outbox, once.
    async with container.db.session() as session:
        from customer_ledger.db import outbox

        rows = (await session.execute(select(outbox.outbox.c.payload))).all()
    sizes = [json.loads(r[0])["data"]["tree_size"] for r in rows]
    assert sizes == [4, 9, 10]


async def test_the_witness_follows_the_topic_and_alerts_on_a_fork(
    broker: EmbeddedBroker, settings: Settings, tmp_path: Path
) -> None:
    settings.kafka_bootstrap_servers = broker.bootstrap_servers
    container = bootstrap(settings)
    minter = TokenMinter()
    server = ApiServer(lambda: _app_with(container, minter), free_port())
    await server.start()
    stop = asyncio.Event()
    relay = asyncio.create_task(container.relay().run(stop))
    witness = Witness(container.signer.verifier, server.url, tmp_path / "witness.json")
    following = asyncio.create_task(witness.follow(settings, stop))
    try:
        original = [entry(i) for i in range(40)]
        await build(container, original)

        async def kept(size: int) -> bool:
            return witness.latest is not None and witness.latest.size == size

        await testing.wait_until(
            lambda: kept(40),
            timeout=20,
            message=f"the witness kept size 40 {witness.latest} {witness.alerts}",
        )
        assert witness.alerts == []
        await append(container, [entry(40)])
        await checkpoint(container)
        await testing.wait_until(lambda: kept(41), timeout=60, message="the witness kept size 41")

        # History rewritten and re-signed with the real key, then a new checkpoint published.
        forged = [dict(e) for e in [*original, entry(40)]]
        forged[3]["after"] = "+1 555 0199"
        await sql(
            container,
            delete(JournalEntry),
            delete(JournalNode),
            delete(JournalCheckpoint),
            update(JournalHead).values(size=0),
        )
        await append(container, forged)
        await append(container, [entry(41)])
        await checkpoint(container)

        async def alerted() -> bool:
            return any("FORK" in a for a in witness.alerts)

        await testing.wait_until(alerted, timeout=60, message="the witness's fork alert")
        assert witness.latest is not None and witness.latest.size == 41  # it keeps the evidence
        # A restarted witness remembers what it kept.
        again = Witness(container.signer.verifier, server.url, tmp_path / "witness.json")
        assert again.latest is not None and again.latest.size == 41
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(relay, following, return_exceptions=True), timeout=30)
        await server.stop()
        await container.close()


async def test_checkpoint_history_is_public_and_entries_are_for_admins(
    container: Container, app: Any
) -> None:
    import httpx

    minter = TokenMinter()
    app.state.token_verifier = minter.verifier()
    await build(container, [entry(i) for i in range(25)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as client:
        history = (await client.get("/ledger/checkpoints")).json()
        assert [c["tree_size"] for c in history] == [10, 25]
        assert [c["tree_size"] for c in (await client.get("/ledger/checkpoints?after_size=10")).json()] == [
            25
        ]
        assert (await client.get("/ledger/checkpoints?limit=0")).status_code == 422
        assert (await client.get("/ledger/entries")).status_code == 401
        department = minter.headers("fin-1", "department", department="finance")
        assert (await client.get("/ledger/entries", headers=department)).status_code == 403
        admin = minter.headers("admin-1", "admin")
        bad = await client.get("/ledger/entries?start=-1", headers=admin)
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        page = (await client.get("/ledger/entries?start=20&limit=3", headers=admin)).json()
        assert [e["index"] for e in page] == [20, 21, 22]


# --- Issue 25, section 5: a check the database cannot fool -------------------------------

SIZES = (10, 25, 40, 60)  # checkpoints; 63 entries, so 3 after the last one


async def audited(container: Container, tmp_path: Path) -> dict[str, Path]:
    """A journal of 63 entries, and what an auditor kept of it: the anchor a first audit saved,
    the newest checkpoint, the witness's state and the export."""
    notes = await build(container, [entry(i) for i in range(63)], SIZES)
    key = str(container.signer.verifier)
    export = await export_to(container, tmp_path / "earlier.jsonl")
    saved = tmp_path / "saved-anchor.json"
    code, out = run_verify(
        "--public-key", key, "--export", str(export), "--no-anchor", "--save-anchor", str(saved)
    )
    assert code == 0 and "NOT anchored (--no-anchor)" in out and "WARNING: --no-anchor" in out, out
    assert "unsigned: 3 entries after the last signed checkpoint (size 60): 60..62" in out, out
    kept = tmp_path / "kept-60.txt"
    kept.write_text(notes[-1])
    witness = Witness(container.signer.verifier, "http://unused", tmp_path / "witness.json")
    assert (await witness.observe(notes[-1])).accepted  # the first checkpoint a witness sees is kept
    return {"saved": saved, "kept": kept, "witness": tmp_path / "witness.json", "export": export}


def verify_with(key: str, copy: Path, *anchors: Path) -> tuple[int, str]:
    args = [arg for anchor in anchors for arg in ("--anchor", str(anchor))]
    return run_verify("--public-key", key, "--export", str(copy), *args)


async def test_an_entry_edited_with_its_hashes_recomputed_and_every_checkpoint_deleted(
    container: Container, tmp_path: Path
) -> None:
    kept = await audited(container, tmp_path)
    key = str(container.signer.verifier)
    forged = [entry(i) for i in range(63)]
    forged[17]["after"] = "+49 30 9999"
    # Leaf hashes and tree nodes recomputed (appended again), every checkpoint row gone.
    await sql(
        container,
        delete(JournalEntry),
        delete(JournalNode),
        delete(JournalCheckpoint),
        update(JournalHead).values(size=0),
    )
    await append(container, forged)
    bad = await export_to(container, tmp_path / "bad.jsonl")

    # Without an anchor this used to print "OK ... 0 signed checkpoint(s)" and exit 0.
    code, out = run_verify("--public-key", key, "--export", str(bad))
    assert code == 3 and "NO ANCHOR" in out and "OK" not in out, out
    assert "unsigned: 63 entries and no signed checkpoint: 0..62" in out, out
    code, out = verify_with(key, bad, kept["saved"])
    assert code == 1, out
    assert "not consistent with the tree recorded in your saved anchor saved-anchor.json (size 63)" in out
    assert "the first change is among entries 10..24" in out, out
    assert "the checkpoint of size 60 that your saved anchor saved-anchor.json holds is missing" in out
    for anchor in (kept["kept"], kept["witness"]):
        code, out = verify_with(key, bad, anchor)
        assert code == 1 and "(size 60): history before it was rewritten" in out, out
    code, out = verify_with(key, bad, kept["export"])
    assert code == 1 and "FAILED: first bad index 17" in out, out


async def truncate(container: Container, size: int, *, checkpoints_above: bool) -> None:
    statements: list[Any] = [
        delete(JournalEntry).where(JournalEntry.index >= size),  # type: ignore[arg-type]
        text('DELETE FROM journal_nodes WHERE ("index" + 1) * (1 << "level") > :size').bindparams(size=size),
        update(JournalHead).values(size=size),
    ]
    if checkpoints_above:
        statements.append(delete(JournalCheckpoint).where(JournalCheckpoint.tree_size > size))  # type: ignore[arg-type]
    await sql(container, *statements)


async def test_the_last_entries_truncated_and_the_checkpoints_above_deleted(
    container: Container, tmp_path: Path
) -> None:
    kept = await audited(container, tmp_path)
    key = str(container.signer.verifier)
    await truncate(container, 40, checkpoints_above=True)  # the last 23 entries
    bad = await export_to(container, tmp_path / "bad.jsonl")

    code, out = run_verify("--public-key", key, "--export", str(bad), "--no-anchor")
    assert code == 0 and "OK: 40 entries" in out, out  # what the copy alone cannot tell
    code, out = run_verify("--public-key", key, "--export", str(bad))
    assert code == 3 and "NO ANCHOR" in out, out
    code, out = verify_with(key, bad, kept["saved"])
    assert code == 1 and "FAILED: first bad index 40" in out, out
    assert "covers 63 entries but only 40 are here" in out, out
    assert "the checkpoint of size 60 that your saved anchor saved-anchor.json holds is missing" in out
    for anchor in (kept["kept"], kept["witness"], kept["export"]):
        code, out = verify_with(key, bad, anchor)
        assert code == 1 and "FAILED: first bad index 40" in out, out
    code, out = verify_with(key, bad, kept["witness"])
    assert "the signed checkpoint in the witness's checkpoint witness.json covers 60 entries" in out, out


async def test_the_tail_after_the_last_checkpoint_removed(container: Container, tmp_path: Path) -> None:
    kept = await audited(container, tmp_path)
    key = str(container.signer.verifier)
    await truncate(container, 60, checkpoints_above=False)  # 60..62: no checkpoint covered them
    bad = await export_to(container, tmp_path / "bad.jsonl")

    code, out = verify_with(key, bad, kept["saved"])
    assert code == 1 and "FAILED: first bad index 60" in out, out
    assert "the tree recorded in your saved anchor saved-anchor.json covers 63 entries" in out, out
    code, out = verify_with(key, bad, kept["export"])
    assert code == 1 and "entry 60 of your earlier export earlier.jsonl is gone" in out, out
    # A signed checkpoint never covered them: that is why a saved anchor records the whole tree.
    code, out = verify_with(key, bad, kept["kept"])
    assert code == 0, out


async def checkpoint_25_deleted(container: Container, export: Path) -> None:
    await sql(container, delete(JournalCheckpoint).where(JournalCheckpoint.tree_size == 25))  # type: ignore[arg-type]
    await export_to(container, export)


async def checkpoint_25_issued_after_40(container: Container, export: Path) -> None:
    async with container.db.session() as session:
        last = (
            await session.execute(
                select(JournalCheckpoint.issued_at).where(JournalCheckpoint.tree_size == 40)
            )  # type: ignore[call-overload,arg-type]
        ).scalar_one()
    later = update(JournalCheckpoint).where(JournalCheckpoint.tree_size == 25)  # type: ignore[arg-type]
    await sql(container, later.values(issued_at=last + timedelta(seconds=5)))
    await export_to(container, export)


async def checkpoints_listed_out_of_order(container: Container, export: Path) -> None:
    await export_to(container, export)
    lines = export.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.startswith('{"checkpoint"')]
    lines[at[0]], lines[at[1]] = lines[at[1]], lines[at[0]]  # 25 before 10
    export.write_text("".join(lines))


@pytest.mark.parametrize(
    ("tamper", "finding"),
    [
        (
            checkpoint_25_deleted,
            "the checkpoint of size 25 that your saved anchor saved-anchor.json holds is missing",
        ),
        (checkpoint_25_issued_after_40, "checkpoints out of order: size 40 was issued at"),
        (checkpoints_listed_out_of_order, "checkpoints out of order: size 10 is listed after size 25"),
    ],
    ids=["a checkpoint deleted", "issue times out of order", "listed out of order"],
)
async def test_missing_and_out_of_order_checkpoints(
    container: Container, tmp_path: Path, tamper: Callable[[Container, Path], Awaitable[None]], finding: str
) -> None:
    kept = await audited(container, tmp_path)
    key = str(container.signer.verifier)
    bad = tmp_path / "bad.jsonl"
    await tamper(container, bad)
    code, out = verify_with(key, bad, kept["saved"])
    assert code == 1 and finding in out, out


async def test_a_clean_journal_passes_with_each_kind_of_anchor(container: Container, tmp_path: Path) -> None:
    notes = await build(container, [entry(i) for i in range(40)])
    key = str(container.signer.verifier)
    first = await export_to(container, tmp_path / "earlier.jsonl")
    saved = tmp_path / "first.json"
    code, out = run_verify(
        "--public-key", key, "--export", str(first), "--no-anchor", "--save-anchor", str(saved)
    )
    assert code == 0 and f"anchor saved: {saved} (size 40)" in out, out
    kept = tmp_path / "kept-25.txt"
    kept.write_text(notes[1])
    witness = Witness(container.signer.verifier, "http://unused", tmp_path / "witness.json")
    assert (await witness.observe(notes[2])).accepted

    # The journal grows: a checkpoint at 60 and 3 entries after it.
    await append(container, [entry(i) for i in range(40, 60)])
    await checkpoint(container)
    await append(container, [entry(i) for i in range(60, 63)])
    now = await export_to(container, tmp_path / "now.jsonl")
    again = tmp_path / "second.json"
    code, out = run_verify(
        "--public-key",
        key,
        "--export",
        str(now),
        *("--anchor", str(saved), "--anchor", str(kept), "--anchor", str(tmp_path / "witness.json")),
        *("--anchor", str(first), "--save-anchor", str(again)),
    )
    assert code == 0, out
    assert "OK: 63 entries" in out and "4 signed checkpoint(s) verified; anchored by 4 anchor(s)" in out, out
    assert (
        "the tree recorded in your saved anchor first.json (size 40): the entries extend it, RFC 9162 "
        "consistency proof 40 -> 63" in out
    ), out
    assert "your kept checkpoint kept-25.txt (size 25): the entries extend it" in out, out
    assert "the witness's checkpoint witness.json (size 40): the entries extend it" in out, out
    assert "unsigned: 3 entries after the last signed checkpoint (size 60): 60..62" in out, out
    assert "can be removed unnoticed" not in out  # the anchors cover them
    saved_now = json.loads(again.read_text())
    assert saved_now["tree_size"] == 63 and [c["tree_size"] for c in saved_now["checkpoints"]] == list(SIZES)
    code, out = verify_with(key, now, again)
    assert code == 0 and "consistency proof 63 -> 63 (0 hashes) verified" in out, out


async def test_anchors_that_cannot_be_used(container: Container, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from customer_ledger.journal.signed_note import Checkpoint, Signer, sign_checkpoint

    await build(container, [entry(i) for i in range(25)])
    key = str(container.signer.verifier)
    copy = await export_to(container, tmp_path / "copy.jsonl")
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"hello": 1}')
    code, out = verify_with(key, copy, garbage)
    assert code == 2 and "neither a signed checkpoint" in out, out
    code, out = run_verify("--public-key", key, "--export", str(copy), "--no-anchor", "--anchor", str(copy))
    assert code == 2 and "--no-anchor with an anchor" in out, out
    # A checkpoint signed by another key with the log's name is no anchor: it fails.
    impostor = Signer(container.signer.name, Ed25519PrivateKey.generate())
    forged = tmp_path / "forged.txt"
    forged.write_text(sign_checkpoint(impostor, Checkpoint(impostor.name, 25, bytes(32))))
    code, out = verify_with(key, copy, forged)
    assert code == 1 and "does not verify with the key you pinned" in out, out
