"""Orders in PostgreSQL: the write side loads and saves whole aggregates with SQLAlchemy Core;
the read side is plain SQL run on the driver.

Every change is saved with the events the order recorded, in the same transaction, into the
`outbox` table (transactional outbox): an event exists exactly when its change committed.

Query budget: placing an order is one statement (the order, its items and its event in one
INSERT ... WITH); reading one order or a page is one statement (orders joined to items);
loading an order for a change is two (the row locked, then its items as they are once the
lock is held).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final
from uuid import UUID

from pydantic_core import to_json
from sqlalchemy import (
    ARRAY,
    DateTime,
    Integer,
    Row,
    Text,
    Uuid,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orders.adapters.database import driver_fetch
from orders.adapters.orm import inbox_table as inbox_t
from orders.adapters.orm import order_items_table as items_t
from orders.adapters.orm import orders_table as orders_t
from orders.domain import (
    Action,
    Claim,
    Order,
    OrderEvent,
    OrderItem,
    OrderStatus,
    OrderView,
    Pending,
    RefundStatus,
    Size,
)
from orders.service.documents import event_document
from orders.service.ports import PendingCount

_STATUS: Final = {status.value: status for status in OrderStatus}
_SIZE: Final = {size.value: size for size in Size}
_ACTION: Final = {action.value: action for action in Action}
_REFUND: Final = {refund.value: refund for refund in RefundStatus}

_ORDER_COLUMNS: Final = (
    orders_t.c.id,
    orders_t.c.owner,
    orders_t.c.created,
    orders_t.c.status,
    orders_t.c.version,
    orders_t.c.payment_id,
    orders_t.c.charge_attempt,
    orders_t.c.charge_pending,
    orders_t.c.schedule_id,
    orders_t.c.schedule_pending,
    orders_t.c.refund,
    orders_t.c.refund_id,
    orders_t.c.action,
    orders_t.c.action_token,
    orders_t.c.action_expires,
    orders_t.c.pending_since,
    orders_t.c.due,
    orders_t.c.retries,
)
_ITEM_COLUMNS: Final = (items_t.c.order_id, items_t.c.product, items_t.c.size, items_t.c.quantity)

# Items and events go in as parallel arrays, so any number of them is one statement.
_INSERT_ITEMS: Final = """
INSERT INTO order_items (order_id, position, product, size, quantity)
SELECT :order_id, item.position - 1, item.product, item.size, item.quantity
FROM unnest(:products, :sizes, :quantities)
    WITH ORDINALITY AS item(product, size, quantity, position)"""
_INSERT_EVENTS: Final = """
INSERT INTO outbox (id, order_id, sequence, type, occurred, body)
SELECT event.id, :order_id, event.sequence, event.type, event.occurred, event.body::jsonb
FROM unnest(:event_ids, :sequences, :types, :occurred, :bodies)
    AS event(id, sequence, type, occurred, body)"""
_ITEM_PARAMS: Final = (
    bindparam("order_id", type_=orders_t.c.id.type),
    bindparam("products", type_=ARRAY(Text)),
    bindparam("sizes", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
)
_EVENT_PARAMS: Final = (
    bindparam("order_id", type_=orders_t.c.id.type),
    bindparam("event_ids", type_=ARRAY(Uuid(as_uuid=True))),
    bindparam("sequences", type_=ARRAY(Integer)),
    bindparam("types", type_=ARRAY(Text)),
    bindparam("occurred", type_=ARRAY(DateTime(timezone=True))),
    bindparam("bodies", type_=ARRAY(Text)),
)
# Only constants are joined into SQL here and below, never input: hence the noqa marks.
_PLACE: Final = text(
    f"""
WITH new_order AS (
    INSERT INTO orders (id, owner, created, status, version)
    VALUES (:order_id, :owner, :created, 'created', :version)
), new_items AS ({_INSERT_ITEMS}
){_INSERT_EVENTS}"""  # noqa: S608
).bindparams(*_ITEM_PARAMS, *_EVENT_PARAMS)
_REPLACE_ITEMS: Final = text(_INSERT_ITEMS).bindparams(*_ITEM_PARAMS)
_RECORD_EVENTS: Final = text(_INSERT_EVENTS).bindparams(*_EVENT_PARAMS)


def _item_arrays(order_id: UUID, items: Sequence[OrderItem]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "products": [item.product for item in items],
        "sizes": [item.size.value for item in items],
        "quantities": [item.quantity for item in items],
    }


def _event_arrays(order_id: UUID, events: Sequence[OrderEvent]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "event_ids": [event.id for event in events],
        "sequences": [event.sequence for event in events],
        "types": [event.type.value for event in events],
        "occurred": [event.occurred for event in events],
        "bodies": [to_json(event_document(event)).decode() for event in events],
    }


def _to_order(row: Row[Any], items: Sequence[OrderItem]) -> Order:
    claim = None
    if row.action is not None:
        claim = Claim(_ACTION[row.action], row.action_token, row.action_expires)
    return Order(
        id=row.id,
        owner=row.owner,
        created=row.created,
        status=_STATUS[row.status],
        items=tuple(items),
        version=row.version,
        payment_id=row.payment_id,
        charge_attempt=row.charge_attempt,
        charge_pending=row.charge_pending,
        schedule_id=row.schedule_id,
        schedule_pending=row.schedule_pending,
        refund=_REFUND[row.refund] if row.refund is not None else None,
        refund_id=row.refund_id,
        claim=claim,
        pending_since=row.pending_since,
        # With no claim, `due` is when a pending outcome is to be tried again.
        retry_at=row.due if claim is None else None,
        retries=row.retries,
    )


def _state(order: Order) -> dict[str, Any]:
    """The columns a change may touch, from the order."""
    claim = order.claim
    return {
        "status": order.status.value,
        "version": order.version,
        "payment_id": order.payment_id,
        "charge_attempt": order.charge_attempt,
        "charge_pending": order.charge_pending,
        "schedule_id": order.schedule_id,
        "schedule_pending": order.schedule_pending,
        "refund": order.refund.value if order.refund is not None else None,
        "refund_id": order.refund_id,
        "action": claim.action.value if claim is not None else None,
        "action_token": claim.token if claim is not None else None,
        "action_expires": claim.expires if claim is not None else None,
        "pending_since": order.pending_since,
        "due": order.due,
        "retries": order.retries,
    }


class SqlOrderRepository:
    """The orders of one transaction (see SqlUnitOfWork)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        # The items each order had when loaded: a save rewrites them only when they changed.
        self._loaded_items: dict[UUID, tuple[OrderItem, ...]] = {}
        self.events: list[OrderEvent] = []

    async def get(self, order_id: UUID, owner: str, *, for_update: bool = False) -> Order | None:
        return await self._get(order_id, owner, for_update=for_update)

    async def find(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        """The order whoever owns it: for news from kitchen and delivery, which know no owner."""
        return await self._get(order_id, None, for_update=for_update)

    async def _get(self, order_id: UUID, owner: str | None, *, for_update: bool) -> Order | None:
        query = select(*_ORDER_COLUMNS).where(orders_t.c.id == order_id)
        if owner is not None:
            query = query.where(orders_t.c.owner == owner)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        if row is None:
            return None
        # A statement of its own, after the lock: it sees the items as they are now, after a
        # change this one waited for, where a join would see them as they were before.
        return (await self._with_items([row]))[0]

    async def due(self, now: datetime, limit: int) -> list[Order]:
        rows = (
            await self._connection.execute(
                select(*_ORDER_COLUMNS)
                .where(orders_t.c.due <= now)
                .order_by(orders_t.c.due)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        return await self._with_items(rows)

    async def add(self, order: Order) -> None:
        params = _item_arrays(order.id, order.items)
        params.update(_event_arrays(order.id, order.events))
        params.update(owner=order.owner, created=order.created, version=order.version)
        await self._connection.execute(_PLACE, params)
        self._published(order)

    async def save(self, order: Order) -> None:
        await self._connection.execute(
            update(orders_t)
            .where(orders_t.c.id == order.id)
            .values({**_state(order), "updated": func.now()})
        )
        if order.items != self._loaded_items.get(order.id):
            await self._connection.execute(items_t.delete().where(items_t.c.order_id == order.id))
            await self._connection.execute(_REPLACE_ITEMS, _item_arrays(order.id, order.items))
            self._loaded_items[order.id] = order.items
        await self._record_events(order)

    async def delete(self, order: Order) -> None:
        await self._connection.execute(orders_t.delete().where(orders_t.c.id == order.id))
        await self._record_events(order)

    async def _record_events(self, order: Order) -> None:
        if order.events:
            await self._connection.execute(_RECORD_EVENTS, _event_arrays(order.id, order.events))
            self._published(order)

    def _published(self, order: Order) -> None:
        self.events.extend(order.events)
        order.events.clear()

    async def _with_items(self, rows: Sequence[Any]) -> list[Order]:
        if not rows:
            return []
        items: dict[UUID, list[OrderItem]] = {row.id: [] for row in rows}
        found = await self._connection.execute(
            select(*_ITEM_COLUMNS)
            .where(items_t.c.order_id.in_(list(items)))
            .order_by(items_t.c.order_id, items_t.c.position)
        )
        for order_id, product, size, quantity in found:
            items[order_id].append(OrderItem(product, _SIZE[size], quantity))
        orders = [_to_order(row, items[row.id]) for row in rows]
        for order in orders:
            self._loaded_items[order.id] = order.items
        return orders


class SqlInbox:
    """The ids of handled messages, in the `inbox` table, in one transaction."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, message_id: str) -> bool:
        # A concurrent insert of the same id makes this wait for its transaction: if that
        # commits, this inserts nothing; if it rolls back, this one takes its place.
        inserted = await self._connection.execute(
            pg_insert(inbox_t)
            .values(message_id=message_id)
            .on_conflict_do_nothing()
            .returning(inbox_t.c.message_id)
        )
        return inserted.first() is not None


# The read side: what the API shows of an order, in plain SQL for asyncpg.

_VIEW_COLUMNS: Final = "o.id, o.created, o.status, o.version"
_ITEMS: Final = "order_items.product, order_items.size, order_items.quantity"

GET_ONE: Final = f"""
SELECT {_VIEW_COLUMNS}, {_ITEMS}
FROM orders AS o LEFT OUTER JOIN order_items ON order_items.order_id = o.id
WHERE o.id = $1 AND o.owner = $2
ORDER BY order_items.position"""  # noqa: S608


@cache
def list_page(cancelled: bool | None, after: bool) -> str:
    """The page query for this filter: `$1` is the owner, `$2` the limit, and with `after`
    `$3`, `$4` the (created, id) the page starts after. The keyset condition is a row
    comparison, so the page is a backward range scan of ix_orders_owner_created however
    deep it is."""
    where = "owner = $1"
    if cancelled is not None:
        where += " AND status " + ("=" if cancelled else "<>") + " 'cancelled'"
    if after:
        where += " AND (created, id) < ($3, $4)"
    return f"""
SELECT {_VIEW_COLUMNS}, {_ITEMS}
FROM (
    SELECT id, created, status, version FROM orders
    WHERE {where}
    ORDER BY created DESC, id DESC LIMIT $2
) AS o LEFT OUTER JOIN order_items ON order_items.order_id = o.id
ORDER BY o.created DESC, o.id DESC, order_items.position"""  # noqa: S608


# Every order with something pending has a due time, so the partial index on `due` serves
# this; with nothing pending it reads nothing.
PENDING: Final = """
SELECT
    count(*) FILTER (WHERE charge_pending),
    min(pending_since) FILTER (WHERE charge_pending),
    count(*) FILTER (WHERE schedule_pending),
    min(pending_since) FILTER (WHERE schedule_pending),
    count(*) FILTER (WHERE refund = 'owed'),
    min(pending_since) FILTER (WHERE refund = 'owed')
FROM orders
WHERE due IS NOT NULL"""


def _to_views(rows: Iterable[Sequence[Any]]) -> list[OrderView]:
    """Fold joined (order, item) rows, already in output order, into views."""
    views: list[OrderView] = []
    items: list[OrderItem] = []
    current: Sequence[Any] | None = None
    for row in rows:
        if current is None or row[0] != current[0]:
            if current is not None:
                views.append(_to_view(current, items))
            current, items = row, []
        if row[4] is not None:
            items.append(OrderItem(row[4], _SIZE[row[5]], row[6]))
    if current is not None:
        views.append(_to_view(current, items))
    return views


def _to_view(row: Sequence[Any], items: list[OrderItem]) -> OrderView:
    return OrderView(row[0], row[1], _STATUS[row[2]], tuple(items), row[3])


class SqlOrderViews:
    """Read-only queries: one statement each, in autocommit (no BEGIN/ROLLBACK round trips),
    sent straight to the driver: SQLAlchemy's execution layer costs about as much again as
    these queries themselves (see `driver_fetch`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, order_id: UUID, owner: str) -> OrderView | None:
        views = _to_views(await driver_fetch(self._engine, GET_ONE, (order_id, owner)))
        return views[0] if views else None

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        cancelled: bool | None = None,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[OrderView]:
        sql = list_page(cancelled, after is not None)
        args = (owner, limit) if after is None else (owner, limit, *after)
        return _to_views(await driver_fetch(self._engine, sql, args))

    async def pending(self) -> Sequence[PendingCount]:
        [row] = await driver_fetch(self._engine, PENDING, ())
        return [
            PendingCount(kind, row[2 * index], row[2 * index + 1])
            for index, kind in enumerate((Pending.CHARGE, Pending.SCHEDULE, Pending.REFUND))
        ]
