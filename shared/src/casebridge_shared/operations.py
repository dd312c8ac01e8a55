"""Operator commands every consuming service offers, built once: ``<service> dead-letters ...``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import typer

from casebridge_shared.inbox import EventConsumer, list_dead_letters, replay_dead_letter


class _ConsumerContainer(Protocol):
    def consumer(self) -> EventConsumer: ...

    async def close(self) -> None: ...


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
