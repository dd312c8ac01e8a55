"""Operator commands: ``order-intake --help``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from casebridge_shared.operations import service_app
from order_intake.bootstrap import Container, bootstrap
from order_intake.db import MIGRATIONS, outbox
from order_intake.settings import get_settings


def _container() -> Container:
    return bootstrap(get_settings())


app = service_app(
    "order-intake",
    settings=get_settings,
    migrations_dir=MIGRATIONS,
    worker_help="Run the worker: the outbox relay, the consumer of case events, the document fetcher.",
    make_container=_container,
    outbox=outbox,
)
keys_app = typer.Typer(help="Token signing keys", no_args_is_help=True)
documents_app = typer.Typer(help="Documents copied from case-handling", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(documents_app, name="documents")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Start signing with a new key; the old one stays published for the grace period."""
    from order_intake.identity.keys import rotate

    async def run() -> str:
        container = bootstrap(get_settings())
        try:
            return (await rotate(container.db, container.keys.box)).kid
        finally:
            await container.close()

    typer.echo(f"new signing key {asyncio.run(run())}")


@app.command("seed-demo")
def seed_demo(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create the demo logins and catalog (used by `make up`; never in production)."""
    from order_intake.demo import DemoLogin, seed

    settings = get_settings()
    if settings.environment.value != "development":
        raise typer.BadParameter("demo data is only for environment=development")

    async def run() -> list[DemoLogin]:
        container = bootstrap(settings)
        try:
            await container.keys.load()
            return await seed(container)
        finally:
            await container.close()

    logins = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(logins))
    else:
        for login in logins:
            typer.echo(f"{login['role']:<12} {login['email']:<40} {login['password']}")


@documents_app.command("retry")
def documents_retry(
    document_id: Annotated[
        str | None, typer.Argument(help="One document; default: every rejected one")
    ] = None,
) -> None:
    """Fetch rejected documents again (after case-handling corrected the file)."""
    from order_intake.documents.service import requeue_rejected

    async def run() -> int:
        container = _container()
        try:
            return await requeue_rejected(container.db, document_id)
        finally:
            await container.close()

    typer.echo(f"{asyncio.run(run())} document(s) queued for another fetch")
