"""Operator commands: ``customer-ledger --help``."""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Annotated

import httpx
import typer

from casebridge_shared.operations import service_app
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.db import MIGRATIONS, outbox
from customer_ledger.journal import anchors, audit, copies
from customer_ledger.journal.signed_note import NoteError, Verifier
from customer_ledger.settings import get_settings


def _container() -> Container:
    return bootstrap(get_settings())


app = service_app(
    "customer-ledger",
    settings=get_settings,
    migrations_dir=MIGRATIONS,
    worker_help="Run the worker: logins and account changes into the journal; checkpoints per batch, out.",
    make_container=_container,
    outbox=outbox,
)


def _verifier(key: str) -> Verifier:
    """A verifier key given as text, or the path of a file holding it."""
    path = Path(key)
    text = path.read_text(encoding="utf-8") if path.is_file() else key
    return Verifier.parse(text.strip())


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="File to write (JSON Lines)")],
) -> None:
    """Export the whole journal (entries, tree nodes, signed checkpoints) for auditors."""
    settings = get_settings()
    container = bootstrap(settings)

    async def run() -> int:
        try:
            with out.open("w", encoding="utf-8") as f:
                return await copies.export(container.db, f, container.signer.name)
        finally:
            await container.close()

    count = asyncio.run(run())
    typer.echo(f"{out}: {count} entries")


@app.command()
def rebuild(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare the tables with the journal; change nothing")
    ] = False,
) -> None:
    """Recreate every customer and access table from the journal alone (exit 1 if they differed)."""
    from customer_ledger.records import differences, rebuild, snapshot

    container = bootstrap(get_settings())

    async def run() -> tuple[int, list[str]]:
        try:
            async with container.uow() as uow:
                live = await snapshot(uow.session)
                replayed = await rebuild(uow.session)
                found = differences(live, await snapshot(uow.session))
                if check:
                    await uow.session.rollback()
                else:
                    await uow.commit()
                return replayed, found
        finally:
            await container.close()

    replayed, found = asyncio.run(run())
    for line in found:
        typer.echo(line, err=True)
    action = "compared with" if check else "rebuilt from"
    typer.echo(f"tables {action} {replayed} journal entries: {'differences found' if found else 'identical'}")
    if found:
        raise typer.Exit(code=1)


# Exit codes of `verify` (2 is click's: bad arguments, a file that is no export or anchor).
VERIFY_OK = 0
VERIFY_FAILED = 1  # the copy was tampered with, or disagrees with an anchor
VERIFY_NO_ANCHOR = 3  # the copy agrees with itself, but nothing it cannot rewrite was checked
VERIFY_UNREACHABLE = 4  # the API did not serve the copy (refused, 401/403, ...): nothing was checked


def _load_anchor(path: Path) -> audit.Anchor:
    try:
        return anchors.load(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from exc


@app.command()
def verify(
    public_key: Annotated[
        str,
        typer.Option(
            "--public-key", help="The journal's verifier key you pinned (text, or a file holding it)"
        ),
    ],
    export_file: Annotated[
        Path | None, typer.Option("--export", help="A file from `customer-ledger export`")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="The ledger's API, e.g. http://127.0.0.1:8004")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="CASEBRIDGE_LEDGER_TOKEN", help="Admin token (reading entries)"),
    ] = None,
    anchor_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--anchor",
            "--kept-checkpoint",
            "--kept-export",
            help="What you kept outside the ledger (repeatable): a signed checkpoint, a witness's state "
            "file, an earlier export, or a file from --save-anchor",
        ),
    ] = None,
    no_anchor: Annotated[
        bool,
        typer.Option(
            "--no-anchor", help="Check without an anchor (a first audit): a consistent rewrite then passes"
        ),
    ] = False,
    save_anchor: Annotated[
        Path | None,
        typer.Option("--save-anchor", help="If the check passes, keep what it saw here, for the next one"),
    ] = None,
) -> None:
    """Check the journal offline against what you kept: signatures, order and root of every checkpoint,
    and an RFC 9162 consistency proof from each anchor to the entries.

    Exit 0: passed. 1: tampered (the first bad entry index is named where it can be
    told). 2: bad arguments or files. 3: no anchor given, and --no-anchor not either:
    nothing the database cannot rewrite was checked. 4: the API did not serve the copy.
    """
    if (export_file is None) == (url is None):
        raise typer.BadParameter("give exactly one of --export and --url")
    if no_anchor and anchor_files:
        raise typer.BadParameter("--no-anchor with an anchor: give one or the other")
    try:
        verifier = _verifier(public_key)
    except NoteError as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from exc
    kept = [_load_anchor(path) for path in anchor_files or []]
    if export_file is not None:
        try:
            copy = copies.load(export_file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--export") from exc
    else:
        try:
            copy = copies.fetch(url or "", token)
        except httpx.HTTPError as exc:
            typer.echo(f"UNREACHABLE: could not read the journal from {url}: {exc}", err=True)
            raise typer.Exit(code=VERIFY_UNREACHABLE) from exc
    report = audit.verify(
        copy.entries, verifier, stored_nodes=copy.nodes, checkpoints=copy.checkpoints, anchors=kept
    )
    for line in report.checked:
        typer.echo(f"checked: {line}")
    if report.unsigned:
        last = report.last_signed
        after = (
            f"after the last signed checkpoint (size {last})" if report.signed else "and no signed checkpoint"
        )
        warning = "" if report.anchored else "; without an anchor covering them they can be removed unnoticed"
        typer.echo(
            f"unsigned: {report.unsigned} entries {after}: {last}..{report.size - 1} are covered by no "
            f"signature{warning}"
        )
    if not report.ok:
        first = report.first_bad_index
        typer.echo(f"FAILED: first bad index {first if first is not None else 'unknown'}", err=True)
        for finding in report.findings:
            typer.echo(f"  {finding}", err=True)
        raise typer.Exit(code=VERIFY_FAILED)
    root = base64.b64encode(report.root).decode()
    checked = report.checkpoints_checked
    summary = f"{report.size} entries, root {root}, {checked} signed checkpoint(s) verified"
    if not report.anchored and not no_anchor:
        typer.echo(
            f"NO ANCHOR: {summary}, but only against itself: a copy with an entry changed, its hashes "
            "recomputed and its checkpoints deleted passes that too. Give --anchor FILE (a checkpoint "
            "you kept, a witness's, an earlier export, a --save-anchor file), or --no-anchor for a "
            "first audit.",
            err=True,
        )
        raise typer.Exit(code=VERIFY_NO_ANCHOR)
    if report.anchored:
        typer.echo(f"OK: {summary}; anchored by {report.anchors_checked} anchor(s)")
    else:
        typer.echo(
            "WARNING: --no-anchor: checked against itself only; a rewrite with recomputed hashes and "
            "deleted checkpoints would pass too",
            err=True,
        )
        typer.echo(f"OK: {summary}; NOT anchored (--no-anchor)")
    if save_anchor is not None:
        anchors.save(save_anchor, report, verifier.name)
        typer.echo(f"anchor saved: {save_anchor} (size {report.size}); keep it away from the ledger's hosts")


@app.command()
def witness(
    public_key: Annotated[
        str, typer.Option("--public-key", help="The journal's verifier key (text or file)")
    ],
    url: Annotated[str, typer.Option("--url", help="The ledger's public API (for consistency proofs)")],
    state: Annotated[
        Path, typer.Option("--state", help="Where the witness keeps the latest checkpoint")
    ] = Path("ledger-witness.json"),
) -> None:
    """Follow casebridge.ledger-checkpoints.v1; alert (log error, metric) on a bad signature or a fork."""
    from casebridge_shared.logs import configure_logging
    from customer_ledger.journal.witness import Witness

    settings = get_settings()
    configure_logging("customer-ledger-witness", level=settings.log_level, json=settings.log_json)
    watcher = Witness(_verifier(public_key), url, state)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await watcher.follow(settings, stop)

    asyncio.run(run())
    raise typer.Exit(code=2 if watcher.alerts else 0)
