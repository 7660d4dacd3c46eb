"""Check that bench/reference.py sends what the service sends.

The service's repository is run once per measured operation against the scratch database, and
every statement it hands to the driver is recorded; each operation must send exactly the one
statement the reference uses, token for token (layout aside).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

import reference
from orders.adapters.database import make_engine
from orders.adapters.repository import SqlOrderViews
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.domain import Order, OrderItem, OrderStatus, Size
from orders.settings import DatabaseSettings


def _tokens(sql: str) -> list[str]:
    return re.findall(r"\$\d+::\w+(?:\[\])?|\$\d+|[\w.]+|[^\s\w]", sql)


async def _service_statements(database_url: str, owner: str, order_id: str) -> dict[str, list[str]]:
    engine = make_engine(DatabaseSettings.load(database_url=database_url))
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])  # (connection, cursor, statement, parameters, context, many)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    statements: dict[str, list[str]] = {}
    try:
        views = SqlOrderViews(engine)
        await views.get(uuid.UUID(order_id), owner)
        statements["GET_ONE"], sent[:] = sent[:], []
        await views.list(owner, limit=10)
        statements["LIST_PAGE"], sent[:] = sent[:], []
        order = Order(
            id=uuid.uuid4(),
            owner=owner,
            created=datetime.now(UTC),
            status=OrderStatus.CREATED,
            items=(OrderItem("latte", Size.BIG, 1),),
        )
        async with SqlUnitOfWork(engine) as uow:
            await uow.orders.add(order)
            await uow.commit()
        statements["PLACE"] = sent[:]
    finally:
        await engine.dispose()
    return statements


def drift(database_url: str, owner: str, order_id: str) -> list[str]:
    """Names of the reference's statements that differ from what the service sends."""
    service = asyncio.run(_service_statements(database_url, owner, order_id))
    return [
        name
        for name, sent in service.items()
        if [_tokens(sql) for sql in sent] != [_tokens(getattr(reference, name))]
    ]
