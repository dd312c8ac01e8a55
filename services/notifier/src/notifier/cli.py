"""Operator commands: ``notifier --help``."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from casebridge_shared import migrations
from casebridge_shared.operations import dead_letters_app
from notifier.bootstrap import Container, bootstrap
from notifier.db import MIGRATIONS
from notifier.settings import get_settings

app = typer.Typer(help="Casebridge notifier", no_args_is_help=True)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _container() -> Container:
    return bootstrap(get_settings())


app.add_typer(dead_letters_app(_container), name="dead-letters")


@app.command()
def worker() -> None:
    """Run the worker: case events into notifications, deliveries sent, escalations fired."""
    from notifier.worker import main

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
        "notifier.main:app",
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
