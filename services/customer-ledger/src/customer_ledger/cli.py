"""Operator commands: ``customer-ledger --help``."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from casebridge_shared import migrations
from customer_ledger.db import MIGRATIONS
from customer_ledger.settings import get_settings

app = typer.Typer(help="Casebridge customer-ledger", no_args_is_help=True)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
