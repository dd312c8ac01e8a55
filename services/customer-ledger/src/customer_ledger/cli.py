"""Operator commands: ``customer-ledger --help``."""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Annotated

import typer

from casebridge_shared.operations import service_app
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.db import MIGRATIONS, outbox
from customer_ledger.journal import audit, copies
from customer_ledger.journal.signed_note import Verifier
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
    kept_checkpoint: Annotated[
        Path | None, typer.Option("--kept-checkpoint", help="A signed checkpoint you kept earlier")
    ] = None,
    kept_export: Annotated[
        Path | None, typer.Option("--kept-export", help="An export you kept earlier")
    ] = None,
) -> None:
    """Check the journal offline: signatures, the root of every checkpoint, consistency with what you kept.

    Exits 1 on any failure and names the first bad entry index where it can be told.
    """
    if (export_file is None) == (url is None):
        raise typer.BadParameter("give exactly one of --export and --url")
    verifier = _verifier(public_key)
    copy = copies.load(export_file) if export_file is not None else copies.fetch(url or "", token)
    report = audit.verify(
        copy.entries,
        verifier,
        stored_nodes=copy.nodes,
        checkpoints=copy.checkpoints,
        kept_checkpoint=kept_checkpoint.read_text(encoding="utf-8") if kept_checkpoint else None,
        kept_entries=copies.load(kept_export).entries if kept_export else None,
    )
    root = base64.b64encode(report.root).decode()
    if report.ok:
        checked = report.checkpoints_checked
        typer.echo(f"OK: {report.size} entries, root {root}, {checked} signed checkpoint(s) verified")
        return
    first = report.first_bad_index
    typer.echo(f"FAILED: first bad index {first if first is not None else 'unknown'}", err=True)
    for finding in report.findings:
        typer.echo(f"  {finding}", err=True)
    raise typer.Exit(code=1)


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
        await watcher.follow(settings.kafka_bootstrap_servers, stop)

    asyncio.run(run())
    raise typer.Exit(code=2 if watcher.alerts else 0)
