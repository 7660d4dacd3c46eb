"""The engine (one per process, made in the app's lifespan) and what counts as an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final, cast
from uuid import uuid4

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool

from orders.service.ports import StorageUnavailable
from orders.settings import DatabaseSettings


def make_engine(
    settings: DatabaseSettings, *, poolclass: type[Pool] = AsyncAdaptedQueuePool
) -> AsyncEngine:
    """Create the process's engine. It connects lazily, so this does no IO.

    `poolclass` may replace the queue pool with one of its subclasses (to measure waits).
    """
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_command_timeout,
        "server_settings": {"application_name": "orders"},
    }
    if settings.db_transaction_pooling:
        connect_args.update(_TRANSACTION_POOLING)
    engine = create_async_engine(
        settings.sqlalchemy_url,
        poolclass=poolclass,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # Server-side idle timeouts and failovers close connections; recycle well before.
        pool_recycle=1800,
        # Errors and logs show statements without their values: those are customer data.
        hide_parameters=True,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _unique_statement_name() -> str:
    return f"__orders_{uuid4().hex}__"


# A transaction-pooling PgBouncer (before 1.21's max_prepared_statements) hands each
# transaction whichever server connection is free, so a prepared statement made in one
# transaction may be missing in the next, and asyncpg's per-connection names
# (__asyncpg_stmt_1__, ...) collide with another client's on the same server connection.
# Hence no statement caches, neither asyncpg's nor the SQLAlchemy dialect's, and names that
# are unique everywhere: what SQLAlchemy's asyncpg dialect documents for PgBouncer.
_TRANSACTION_POOLING: Final[dict[str, Any]] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


def _refuse_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Never hand out a pooled connection the server has closed (a restart, a terminated
    backend): the pool then opens a fresh one in its place. asyncpg notices the close as it
    happens, so this costs no round trip, unlike a pre-ping."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


class Outage(Enum):
    """Why the database cannot serve this process now."""

    #: It may serve a moment later: unreachable, overloaded, restarting, failing over, slow.
    PASSING = "passing"
    #: It refuses this process until someone changes the configuration: waiting cannot help.
    REFUSED = "refused"


# SQLSTATE classes that mean "the server cannot be used now", whatever the request:
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (shutting down, starting up, terminated). 25006 is a write that
# reached a read-only server: a failover.
_PASSING_CLASSES: Final = frozenset({"08", "53", "57"})
_PASSING_STATES: Final = frozenset({"25006"})
# 28 credentials refused, 3D no such database.
_REFUSED_CLASSES: Final = frozenset({"28", "3D"})


def _sqlstate(error: BaseException) -> str | None:
    # asyncpg's errors carry it; SQLAlchemy's wrap the driver's error in `orig`.
    for candidate in (error, getattr(error, "orig", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def outage(error: BaseException) -> Outage | None:
    """Whether `error` means the database could not be reached, refused to serve, or did not
    answer in time, and whether waiting can help; None when it is about the request (a bug,
    a constraint, a statement that failed), which no outage explains.

    This is the one classification of database errors: outages become 503 for clients, and
    the container entrypoint waits out a passing one but stops at a refusal.
    """
    state = _sqlstate(error)
    if state is not None:
        if state[:2] in _REFUSED_CLASSES:
            return Outage.REFUSED
        if state[:2] in _PASSING_CLASSES or state in _PASSING_STATES:
            return Outage.PASSING
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Outage.PASSING
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout | OSError | TimeoutError):
        return Outage.PASSING
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` is an outage of the database (see `outage`): a 503, never a 500."""
    return outage(error) is not None


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
