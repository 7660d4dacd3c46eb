"""The engine (one per process, made in the app's lifespan) and what counts as an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final, cast

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orders.service.ports import StorageUnavailable
from orders.settings import DatabaseSettings


def make_engine(settings: DatabaseSettings) -> AsyncEngine:
    """Create the process's engine. It connects lazily, so this does no IO."""
    engine = create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # Server-side idle timeouts and failovers close connections; recycle well before.
        pool_recycle=1800,
        # Errors and logs show statements without their values: those are customer data.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_command_timeout,
            "server_settings": {"application_name": "orders"},
        },
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Never hand out a pooled connection the server has closed (a restart, a terminated
    backend): the pool then opens a fresh one in its place. asyncpg notices the close as it
    happens, so this costs no round trip, unlike a pre-ping."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


# SQLSTATE classes that mean "the server cannot be used now", whatever the request:
# 08 connection exception, 28 credentials refused, 3D no such database, 53 insufficient
# resources (too many connections, disk full), 57 operator intervention (shutting down,
# starting up, terminated). 25006 is a write that reached a read-only server: a failover.
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "28", "3D", "53", "57"})
_UNAVAILABLE_STATES: Final = frozenset({"25006"})


def _sqlstate(error: BaseException) -> str | None:
    # asyncpg's errors carry it; SQLAlchemy's wrap the driver's error in `orig`.
    for candidate in (error, getattr(error, "orig", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means the database could not be reached, refused to serve, or did not
    answer in time.

    Such errors become 503 for the client; anything else is a bug and stays a 500.
    """
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    state = _sqlstate(error)
    if state is not None and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES):
        return True
    return isinstance(
        error, OperationalError | InterfaceError | PoolTimeout | OSError | TimeoutError
    )


async def ping(engine: AsyncEngine, within: float) -> None:
    """Run a trivial query; raise TimeoutError or a driver error when the database is down."""
    async with asyncio.timeout(within), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def driver_fetch(engine: AsyncEngine, sql: str, args: Sequence[Any]) -> list[Any]:
    """The rows of one statement compiled ahead of time, run on a pooled connection's asyncpg
    connection.

    SQLAlchemy's execution layer (a greenlet hop, an execution context, result wrapping)
    costs more than a short query itself; a statement that needs no bind or result processing
    loses nothing by going to the driver. Outside a transaction asyncpg runs it in autocommit,
    with no BEGIN/ROLLBACK. A connection the driver finds closed is invalidated, as SQLAlchemy
    would do, so that the pool never hands it out again. Outages raise StorageUnavailable.
    """
    try:
        connection = await engine.connect()
        try:
            # Just checked out, so the pooled connection is at hand: no greenlet hop to reach it.
            pooled = cast(Connection, connection.sync_connection).connection
            driver: Any = pooled.driver_connection
            try:
                rows: list[Any] = await driver.fetch(sql, *args)
            except Exception as error:
                if driver.is_closed():
                    await connection.invalidate(error)
                    raise StorageUnavailable("the database is unavailable") from error
                raise
            return rows
        finally:
            # Closed in place rather than by `async with`, which runs close() in a task of its
            # own (to shield it); outside a transaction, returning the connection does no IO.
            await connection.close()
    except Exception as error:
        if is_unavailable(error):
            raise StorageUnavailable("the database is unavailable") from error
        raise
