"""Operator commands every service offers, built once: ``<service> api|worker|db|dead-letters|relay ...``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
import uvicorn
from sqlalchemy import select

from casebridge_shared import migrations
from casebridge_shared.db import Database
from casebridge_shared.inbox import EventConsumer, list_dead_letters, replay_dead_letter
from casebridge_shared.keyfiles import owner_only_umask
from casebridge_shared.outbox import OutboxTables, mark_for_replay, relay_status
from casebridge_shared.settings import ServiceSettings


class _ConsumerContainer(Protocol):
    @property
    def db(self) -> Database: ...

    def consumer(self) -> EventConsumer: ...

    async def close(self) -> None: ...


def relay_app(make_container: Callable[[], _ConsumerContainer], outbox: OutboxTables) -> typer.Typer:
    """``status`` and ``replay`` for the service's outbox relay."""
    app = typer.Typer(help="The outbox relay", no_args_is_help=True)

    @app.command("replay")
    def replay_command(
        since: Annotated[
            datetime,
            typer.Option(
                help="Republish every published event created at or after this time (UTC if no zone)"
            ),
        ],
    ) -> None:
        """Queue published events for publishing again (e.g. to rebuild a topic); consumers drop copies."""
        when = since if since.tzinfo else since.replace(tzinfo=UTC)

        async def run() -> int:
            container = make_container()
            try:
                return await mark_for_replay(container.db, outbox, when)
            finally:
                await container.close()

        count = asyncio.run(run())
        typer.echo(f"{count} events queued for republishing")

    @app.command("status")
    def status_command() -> None:
        """Backlog, oldest unpublished age and the last runs, as JSON."""

        async def run() -> dict[str, object]:
            container = make_container()
            try:
                status = await relay_status(container.db, outbox)
                latest = status.last_runs[0] if status.last_runs else None
                resets = [r for r in status.last_runs if (r["error"] or "").startswith("broker reset:")]
                async with container.db.session() as session:
                    acknowledged = [
                        dict(r) for r in (await session.execute(select(outbox.relay_offsets))).mappings()
                    ]
                return {
                    # The newest run's error, if it failed: a halted relay (a topic not as
                    # configured) or a broker that cannot be reached shows here first.
                    "state": f"failing: {latest['error']}" if latest and latest["error"] else "ok",
                    "backlog": status.backlog,
                    "oldest_unpublished_age_seconds": status.oldest_unpublished_age_seconds,
                    "broker_resets_in_last_runs": [r["error"] for r in resets],
                    "acknowledged_by_broker": acknowledged,
                    "last_runs": status.last_runs,
                }
            finally:
                await container.close()

        typer.echo(json.dumps(asyncio.run(run()), default=str, indent=2))

    return app


def dead_letters_app(make_container: Callable[[], _ConsumerContainer]) -> typer.Typer:
    """``list`` and ``replay`` for the dead letters of the service's consumer group."""
    app = typer.Typer(help="Events the consumer could not apply", no_args_is_help=True)

    @app.command("list")
    def list_command(
        all_: Annotated[bool, typer.Option("--all", help="also those already replayed")] = False,
    ) -> None:
        """One JSON object per line: id, origin, event, error, attempts."""

        async def run() -> list[dict[str, Any]]:
            container = make_container()
            try:
                consumer = container.consumer()
                return await list_dead_letters(
                    consumer.db, consumer.tables, consumer.group, pending_only=not all_
                )
            finally:
                await container.close()

        for row in asyncio.run(run()):
            typer.echo(
                json.dumps(
                    {
                        "id": row["id"],
                        "topic": row["topic"],
                        "partition": row["partition"],
                        "offset": row["offset"],
                        "event_id": row["event_id"],
                        "event_type": row["event_type"],
                        "error": row["error"],
                        "attempts": row["attempts"],
                        "created_at": row["created_at"].isoformat(),
                        "replayed_at": row["replayed_at"].isoformat() if row["replayed_at"] else None,
                        "replay_error": row["replay_error"],
                    }
                )
            )

    @app.command("replay")
    def replay_command(
        dead_letter_id: Annotated[int | None, typer.Argument(help="one dead letter")] = None,
        all_: Annotated[bool, typer.Option("--all", help="every pending dead letter, oldest first")] = False,
    ) -> None:
        """Apply dead letters again after a fix; still failing ones stay pending. Exit 1 if any failed."""
        if (dead_letter_id is None) == (not all_):
            raise typer.BadParameter("give one dead letter id, or --all")

        async def run() -> int:
            container = make_container()
            failed = 0
            try:
                consumer = container.consumer()
                ids = (
                    [dead_letter_id]
                    if dead_letter_id is not None
                    else [
                        r["id"] for r in await list_dead_letters(consumer.db, consumer.tables, consumer.group)
                    ]
                )
                for one in ids:
                    try:
                        outcome = await replay_dead_letter(consumer, one)
                    except LookupError as exc:
                        typer.echo(str(exc), err=True)
                        failed += 1
                        continue
                    state = "failed again: " + (outcome.error or "") if outcome.dead_lettered else "applied"
                    failed += outcome.dead_lettered
                    typer.echo(f"{one}: {'duplicate, no effect' if outcome.duplicate else state}")
            finally:
                await container.close()
            return failed

        if asyncio.run(run()):
            raise typer.Exit(1)

    return app


def service_app(
    service: str,
    *,
    settings: Callable[[], ServiceSettings],
    migrations_dir: Path,
    worker_help: str,
    make_container: Callable[[], _ConsumerContainer],
    outbox: OutboxTables,
) -> typer.Typer:
    """``<service> api``, ``worker``, ``db upgrade|downgrade``, ``dead-letters`` and ``relay``.

    The ASGI app and the worker's entry are the ones the service's package
    declares (entry points ``casebridge.api`` and ``casebridge.worker``, which
    ``casebridge up`` also finds the services by), loaded when the command runs,
    so ``--help`` and the database commands stay quick. The service adds its own
    commands to the app returned.
    """
    owner_only_umask()  # databases, key files and uploads an operator command creates: owner-only
    app = typer.Typer(help=f"Casebridge {service}", no_args_is_help=True)
    db_app = typer.Typer(help="Database schema", no_args_is_help=True)
    app.add_typer(db_app, name="db")
    app.add_typer(dead_letters_app(make_container), name="dead-letters")
    app.add_typer(relay_app(make_container, outbox), name="relay")

    @app.command()
    def api(
        host: Annotated[str | None, typer.Option(help="Default: settings")] = None,
        port: Annotated[int | None, typer.Option(help="Default: settings")] = None,
        workers: int = 1,
    ) -> None:
        """Serve the HTTP API (uvicorn)."""
        current = settings()
        (entry,) = entry_points(group="casebridge.api", name=service)
        uvicorn.run(
            entry.value,
            host=host or current.host,
            port=port or current.port,
            workers=workers,
            log_config=None,
            access_log=False,
            # The app decides whom to believe (``trusted_proxies``, web.ForwardedForMiddleware);
            # uvicorn's default would believe X-Forwarded-For from any local peer.
            proxy_headers=False,
            # Open live streams would keep a stopping api waiting forever.
            timeout_graceful_shutdown=current.shutdown_grace_seconds,
        )

    @app.command("worker", help=worker_help)
    def worker_command() -> None:
        (entry,) = entry_points(group="casebridge.worker", name=service)
        entry.load()()

    @db_app.command("upgrade")
    def db_upgrade(revision: str = "head") -> None:
        """Apply migrations (SQLite and PostgreSQL alike)."""
        migrations.upgrade(migrations_dir, settings().database_url, revision)

    @db_app.command("downgrade")
    def db_downgrade(revision: str) -> None:
        """Step the schema back to the given revision."""
        migrations.downgrade(migrations_dir, settings().database_url, revision)

    return app
