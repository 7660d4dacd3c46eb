"""Check that bench/reference.py sends what the service sends.

The service's repository is run for each measured operation against the scratch database, and
every statement it sends is recorded, whether through SQLAlchemy (its cursor events) or
straight to asyncpg (asyncpg's query log, which also shows transaction control); each
operation must send exactly what the reference sends: its statement, token for token (layout
aside), wrapped in BEGIN/COMMIT for the write.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

import reference
from orders.adapters.database import make_engine
from orders.adapters.repository import SqlOrderViews
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.domain import Order, OrderItem, Size
from orders.settings import DatabaseSettings


def _tokens(sql: str) -> list[str]:
    return re.findall(r"\$\d+::\w+(?:\[\])?|\$\d+|[\w.]+|[^\s\w]", sql)


async def _service_statements(database_url: str, owner: str, order_id: str) -> dict[str, list[str]]:
    engine = make_engine(DatabaseSettings.load(database_url=database_url))
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    def before_execute(*args: Any) -> None:
        sent.append(args[2])  # (connection, cursor, statement, parameters, context, many)

    event.listen(engine.sync_engine, "connect", on_connect)
    views = SqlOrderViews(engine)

    async def place() -> None:
        order = Order.place(
            uuid.uuid4(), owner, (OrderItem("latte", Size.BIG, 1),), datetime.now(UTC)
        )
        # The write goes through SQLAlchemy, whose prepared statements asyncpg does not log.
        event.listen(engine.sync_engine, "before_cursor_execute", before_execute)
        try:
            async with SqlUnitOfWork(engine) as uow:
                await uow.orders.add(order)
                await uow.commit()
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", before_execute)

    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "GET_ONE": lambda: views.get(uuid.UUID(order_id), owner),
        "LIST_PAGE": lambda: views.list(owner, limit=10),
        "PLACE": place,
    }
    statements: dict[str, list[str]] = {}
    try:
        for name, operation in operations.items():
            # The first run on a connection also prepares statements and introspects types.
            await operation()
            await asyncio.sleep(0.05)  # asyncpg calls query loggers soon, not at once
            sent.clear()
            await operation()
            await asyncio.sleep(0.05)
            statements[name] = sent[:]
    finally:
        await engine.dispose()
    return statements


def drift(database_url: str, owner: str, order_id: str) -> list[str]:
    """Names of the reference's statements that differ from what the service sends."""
    service = asyncio.run(_service_statements(database_url, owner, order_id))
    expected = {
        "GET_ONE": [reference.GET_ONE],
        "LIST_PAGE": [reference.LIST_PAGE],
        "PLACE": ["BEGIN;", reference.PLACE, "COMMIT;"],
    }
    # Compared as sorted lists: the two logs interleave in no reliable order.
    return [
        name
        for name, sent in service.items()
        if sorted(_tokens(sql) for sql in sent) != sorted(_tokens(sql) for sql in expected[name])
    ]
