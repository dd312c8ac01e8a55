"""Alembic plumbing shared by every service's migrations.

Each service keeps its own ``migrations/`` folder (its own schema history);
its ``env.py`` is two lines that call :func:`run_env`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config


def alembic_config(script_location: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Alembic's config is an ini parser: '%' must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(script_location: Path, database_url: str, revision: str = "head") -> None:
    """Run migrations. Blocking; from async code call it via ``asyncio.to_thread``."""
    if database_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        path = make_url(database_url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            from casebridge_shared.keyfiles import owner_only_file

            owner_only_file(Path(path))
    command.upgrade(alembic_config(script_location, database_url), revision)


def downgrade(script_location: Path, database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(script_location, database_url), revision)


def current_heads(script_location: Path) -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(script_location, "sqlite://")).get_heads())


def _do_run(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTER TABLE
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(metadata: MetaData) -> None:
    section = context.config.get_section(context.config.config_ini_section, {})
    engine = async_engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run, metadata)
    await engine.dispose()


def run_env(metadata: MetaData) -> None:
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(metadata))


# Schema steps every service takes alike (each service's outbox is the shared
# library's). A step's code is frozen once released: a later change is a new step.


def outbox_published_upgrade() -> None:
    """Published events move out of the outbox into ``outbox_published`` (2026-11-27).

    The outbox keeps only what waits to be published, so its index on publication
    state and on creation time go, and so does ``published_at``.
    """
    import sqlalchemy as sa
    from alembic import op

    from casebridge_shared.db import UTCDateTime

    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "outbox_published",
        sa.Column("id", row_id, autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("message_key", sa.String(length=200), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("published_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_published_published_at", "outbox_published", ["published_at"])
    columns = "id, event_id, topic, message_key, event_type, payload, created_at, attempts, last_error"
    op.execute(
        f"INSERT INTO outbox_published ({columns}, published_at)"
        f" SELECT {columns}, published_at FROM outbox WHERE published_at IS NOT NULL"
    )
    # SQLite hands out max(id) + 1 for a new row, so an outbox emptied by the relay
    # would give a new event the id of one already published: AUTOINCREMENT never
    # reuses an id. The table is rebuilt with every row still in it, so the
    # counter starts above every id handed out so far; then the published go.
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table(
        "outbox", table_kwargs={"sqlite_autoincrement": True}, recreate="always" if sqlite else "auto"
    ) as batch_op:
        batch_op.drop_index(
            "ix_outbox_unpublished",
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
        batch_op.drop_index("ix_outbox_created_at")
        batch_op.drop_column("published_at")
    op.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox_published)")


def outbox_published_downgrade() -> None:
    """The reverse of :func:`outbox_published_upgrade`: published events back into the outbox."""
    import sqlalchemy as sa
    from alembic import op

    from casebridge_shared.db import UTCDateTime

    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("published_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbox_created_at", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_outbox_unpublished",
            ["id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
    columns = "id, event_id, topic, message_key, event_type, payload, created_at, attempts, last_error"
    op.execute(
        f"INSERT INTO outbox ({columns}, published_at) SELECT {columns}, published_at FROM outbox_published"
    )
    op.drop_index("ix_outbox_published_published_at", table_name="outbox_published")
    op.drop_table("outbox_published")


def relay_offsets_upgrade() -> None:
    """What the broker acknowledged per partition, to tell when it lost it (2026-12-07)."""
    import sqlalchemy as sa
    from alembic import op

    from casebridge_shared.db import UTCDateTime

    op.create_table(
        "relay_offsets",
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cluster_id", sa.String(length=200), nullable=True),
        sa.Column("acknowledged_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition"),
    )


def relay_offsets_downgrade() -> None:
    from alembic import op

    op.drop_table("relay_offsets")


def identity_revocations_upgrade() -> None:
    """Every service keeps disabled users and revoked sessions (issue 25, casebridge_shared.revocation)."""
    import sqlalchemy as sa
    from alembic import op

    from casebridge_shared.db import UTCDateTime

    op.create_table(
        "identity_revocations",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sessions_not_before", UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def identity_revocations_downgrade() -> None:
    from alembic import op

    op.drop_table("identity_revocations")


def dead_letter_headers_upgrade() -> None:
    """Dead letters keep their record's Kafka headers, so a binary-mode event replays (issue 27)."""
    import sqlalchemy as sa
    from alembic import op

    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.add_column(sa.Column("message_headers", sa.JSON(), nullable=True))


def dead_letter_headers_downgrade() -> None:
    from alembic import op

    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.drop_column("message_headers")


def idempotent_requests_upgrade() -> None:
    """Each service keeps its creating POSTs' keys and answers (casebridge_shared.idempotency)."""
    import sqlalchemy as sa
    from alembic import op

    from casebridge_shared.db import UTCDateTime

    op.create_table(
        "idempotent_requests",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "caller", "key"),
    )


def idempotent_requests_downgrade() -> None:
    from alembic import op

    op.drop_table("idempotent_requests")
