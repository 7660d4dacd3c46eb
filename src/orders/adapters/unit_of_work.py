"""A unit of work on one pooled connection and one transaction that rolls back by default."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from orders.adapters.database import is_unavailable
from orders.adapters.keys import SqlKeyRepository
from orders.adapters.repository import SqlInbox, SqlOrderRepository
from orders.domain import OrderEvent
from orders.service.ports import StorageUnavailable

EventObserver = Callable[[Sequence[OrderEvent]], None]


class SqlUnitOfWork:
    """`async with SqlUnitOfWork(engine) as uow: ...; await uow.commit()`.

    `on_committed` hears the events a transaction wrote, once it has committed.
    """

    orders: SqlOrderRepository
    keys: SqlKeyRepository
    inbox: SqlInbox

    def __init__(self, engine: AsyncEngine, on_committed: EventObserver | None = None) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

    async def __aenter__(self) -> Self:
        try:
            self._connection = await self._engine.connect()
            self._transaction = await self._connection.begin()
        except Exception as error:
            await self._close()
            if is_unavailable(error):
                raise StorageUnavailable("the database is unavailable") from error
            raise
        self.orders = SqlOrderRepository(self._connection)
        self.keys = SqlKeyRepository(self._connection)
        self.inbox = SqlInbox(self._connection)
        return self

    async def commit(self) -> None:
        if self._transaction is None:
            raise RuntimeError("commit() outside `async with`")
        await self._transaction.commit()
        if self._on_committed is not None and self.orders.events:
            self._on_committed(self.orders.events)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close()
        except Exception as error:
            # A failed rollback on a broken connection must not hide the original error.
            if exc is None:
                if is_unavailable(error):
                    raise StorageUnavailable("the database is unavailable") from error
                raise
        if exc is not None and is_unavailable(exc):
            raise StorageUnavailable("the database is unavailable") from exc

    async def _close(self) -> None:
        transaction, connection = self._transaction, self._connection
        self._transaction = self._connection = None
        try:
            if transaction is not None and transaction.is_active:
                await transaction.rollback()
        finally:
            if connection is not None:
                await connection.close()
