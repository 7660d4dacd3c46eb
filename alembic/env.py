"""Alembic environment: async, URL from the service's settings, one migrator at a time.

Several replicas may start at once and each run `alembic upgrade head`; a PostgreSQL advisory
lock held for the whole run makes the others wait and then find nothing left to do.
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
from orders.settings import ConfigurationError, DatabaseSettings

# Any constant works, as long as every migrator of this database uses the same one.
MIGRATION_LOCK_ID = 0x0C0FFEE0

target_metadata = Base.metadata

if not logging.getLogger().handlers:
    # Without an alembic.ini there is no logging section; say what is being run anyway.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)


def _url() -> str:
    override = context.config.attributes.get("database_url")
    if override is not None:
        return str(override)
    try:
        settings = DatabaseSettings.load()
    except ConfigurationError as error:
        raise SystemExit(f"alembic: {error}") from None
    return settings.database_url.get_secret_value()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})


async def run_migrations_online() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
