"""Alembic environment: async, URL from the service's settings, one migrator at a time.

Several replicas may start at once and each run `alembic upgrade head`; a PostgreSQL advisory
lock held for the whole run makes the others wait and then find nothing left to do.

Nothing waits for ever: connecting is bounded by `DB_CONNECT_TIMEOUT`, each statement by
`DB_MIGRATION_STATEMENT_TIMEOUT`, and once the migration lock is held every table lock by
`DB_MIGRATION_LOCK_TIMEOUT` (`lock_timeout`), so a migration stuck behind a long transaction
fails, and stops blocking the queries queued behind it, instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from orders.adapters.orm import Base
from orders.settings import ConfigurationError, MigrationSettings

# Any constant works, as long as every migrator of this database uses the same one.
MIGRATION_LOCK_ID = 0x0C0FFEE0

target_metadata = Base.metadata

if not logging.getLogger().handlers:
    # Without an alembic.ini there is no logging section; say what is being run anyway.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)


def _settings() -> MigrationSettings:
    override = context.config.attributes.get("database_url")
    try:
        if override is not None:
            return MigrationSettings.load(database_url=str(override))
        return MigrationSettings.load()
    except ConfigurationError as error:
        raise SystemExit(f"alembic: {error}") from None


def _url() -> str:
    return _settings().database_url.get_secret_value()


def _milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection, settings: MigrationSettings) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    # Set once the migration lock is held: waiting for it (another replica migrating) is
    # bounded by the statement timeout alone.
    for name, seconds in (
        ("lock_timeout", settings.db_migration_lock_timeout),
        ("statement_timeout", settings.db_migration_statement_timeout),
    ):
        connection.execute(
            text("SELECT set_config(:name, :value, false)"),
            {"name": name, "value": _milliseconds(seconds)},
        )
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})


async def run_migrations_online() -> None:
    settings = _settings()
    engine = create_async_engine(
        settings.sqlalchemy_url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            # asyncpg's own bound, in case the server-side statement_timeout is not reached.
            "command_timeout": settings.db_migration_statement_timeout + 5,
            "server_settings": {"application_name": "orders-migrate"},
        },
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate, settings)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
