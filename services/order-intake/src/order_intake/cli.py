"""Operator commands: ``order-intake --help``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
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


clients_app = typer.Typer(
    help="Machine clients of the client credentials grant (also: the admin API /machine-clients)",
    no_args_is_help=True,
)
app.add_typer(clients_app, name="machine-clients")


def _client_json(client: object, secret: str | None = None) -> str:
    from order_intake.identity.models import MachineClientRead

    shown = MachineClientRead.model_validate(client).model_dump(mode="json")
    if secret is not None:
        shown["client_secret"] = secret  # shown this once; only its hash is stored
    return json.dumps(shown)


def _run_clients(work: Callable[[Container], Awaitable[str]]) -> None:
    from casebridge_shared.problems import Problem

    async def run() -> str:
        container = _container()
        try:
            return await work(container)
        finally:
            await container.close()

    try:
        typer.echo(asyncio.run(run()))
    except Problem as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc


@clients_app.command("create")
def clients_create(
    client_id: Annotated[str, typer.Argument(help="What the machine sends, e.g. ledger-exporter")],
    role: Annotated[list[str], typer.Option("--role", help="auditor or webhook_admin; repeatable")],
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a machine client; prints it as JSON with its secret, which is never shown again."""
    from pydantic import ValidationError

    from order_intake.identity import clients
    from order_intake.identity.models import MachineClientCreate

    try:
        body = MachineClientCreate.model_validate(
            {"client_id": client_id, "roles": role, "description": description}
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def work(container: Container) -> str:
        async with container.uow() as uow:
            client, secret = await clients.create(uow, body, by="cli")
        return _client_json(client, secret)

    _run_clients(work)


@clients_app.command("list")
def clients_list() -> None:
    """Every machine client, one JSON object a line (no secrets)."""
    from order_intake.identity import clients

    async def work(container: Container) -> str:
        async with container.db.session() as session:
            return "\n".join(_client_json(c) for c in await clients.list_all(session))

    _run_clients(work)


@clients_app.command("rotate-secret")
def clients_rotate_secret(client_id: str) -> None:
    """A new secret (printed once); the old one and the tokens it got stop working."""
    from order_intake.identity import clients

    async def work(container: Container) -> str:
        async with container.uow() as uow:
            client, secret = await clients.rotate_secret(uow, client_id)
        return _client_json(client, secret)

    _run_clients(work)


@clients_app.command("disable")
def clients_disable(client_id: str) -> None:
    """No more tokens for the client; every service refuses the ones it holds within 60 s."""
    from order_intake.identity import clients

    async def work(container: Container) -> str:
        async with container.uow() as uow:
            client = await clients.disable(uow, client_id)
        return _client_json(client)

    _run_clients(work)
