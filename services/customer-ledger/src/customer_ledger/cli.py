"""Operator commands: ``customer-ledger --help``."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from casebridge_shared import migrations
from casebridge_shared.operations import dead_letters_app
from customer_ledger.bootstrap import Container, bootstrap
from customer_ledger.db import MIGRATIONS
from customer_ledger.settings import get_settings

app = typer.Typer(help="Casebridge customer-ledger", no_args_is_help=True)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _container() -> Container:
    return bootstrap(get_settings())


app.add_typer(dead_letters_app(_container), name="dead-letters")


@app.command()
def worker() -> None:
    """Run the worker: logins and account changes from order-intake into the journal."""
    from customer_ledger.worker import main

    main()


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: settings")] = None,
    port: Annotated[int | None, typer.Option(help="Default: settings")] = None,
    workers: int = 1,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    settings = get_settings()
    uvicorn.run(
        "customer_ledger.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (SQLite and PostgreSQL alike)."""
    migrations.upgrade(MIGRATIONS, get_settings().database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    migrations.downgrade(MIGRATIONS, get_settings().database_url, revision)
