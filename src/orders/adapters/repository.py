"""Orders in PostgreSQL, read and written with SQLAlchemy Core, returned as domain objects.

Query budget: reading one order or a page of orders is one statement (orders joined to their
items); placing an order is one statement (the order and its items in a single INSERT ... WITH).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cache
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    Integer,
    Select,
    Text,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from orders.adapters.database import driver_fetch
from orders.adapters.orm import order_items_table as items_t
from orders.adapters.orm import orders_table as orders_t
from orders.domain import Action, Order, OrderItem, OrderStatus, Size

_ORDER_COLUMNS = (
    orders_t.c.id,
    orders_t.c.owner,
    orders_t.c.created,
    orders_t.c.status,
    orders_t.c.payment_id,
    orders_t.c.schedule_id,
    orders_t.c.charge_attempt,
    orders_t.c.charge_pending,
)
_PRODUCT = len(_ORDER_COLUMNS)  # item columns follow the order's in joined rows
_ITEM_COLUMNS = (items_t.c.product, items_t.c.size, items_t.c.quantity)

_STATUS: dict[str, OrderStatus] = {status.value: status for status in OrderStatus}
_SIZE: dict[str, Size] = {size.value: size for size in Size}

# Items go in as three parallel arrays, so any number of them is one statement.
_INSERT_ITEMS = """
INSERT INTO order_items (order_id, position, product, size, quantity)
SELECT :order_id, item.position - 1, item.product, item.size, item.quantity
FROM unnest(:products, :sizes, :quantities)
    WITH ORDINALITY AS item(product, size, quantity, position)
"""
_ITEM_PARAMS = (
    bindparam("order_id", type_=orders_t.c.id.type),
    bindparam("products", type_=ARRAY(Text)),
    bindparam("sizes", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
)
_NEW_ORDER = """
WITH new_order AS (
    INSERT INTO orders (id, owner, created, status)
    VALUES (:order_id, :owner, :created, 'created')
)"""
_PLACE = text(_NEW_ORDER + _INSERT_ITEMS).bindparams(*_ITEM_PARAMS)
_REPLACE_ITEMS = text(_INSERT_ITEMS).bindparams(*_ITEM_PARAMS)


def _item_arrays(order_id: UUID, items: Sequence[OrderItem]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "products": [item.product for item in items],
        "sizes": [item.size.value for item in items],
        "quantities": [item.quantity for item in items],
    }


def _to_orders(rows: Iterable[Sequence[Any]]) -> list[Order]:
    """Fold joined (order, item) rows, already in output order, into domain orders."""
    orders: list[Order] = []
    items: list[OrderItem] = []
    current: Sequence[Any] | None = None
    for row in rows:
        if current is None or row[0] != current[0]:
            if current is not None:
                orders.append(_to_order(current, items))
            current, items = row, []
        if row[_PRODUCT] is not None:
            items.append(OrderItem(row[_PRODUCT], _SIZE[row[_PRODUCT + 1]], row[_PRODUCT + 2]))
    if current is not None:
        orders.append(_to_order(current, items))
    return orders


def _to_order(row: Sequence[Any], items: list[OrderItem]) -> Order:
    return Order(
        id=row[0],
        owner=row[1],
        created=row[2],
        status=_STATUS[row[3]],
        items=tuple(items),
        payment_id=row[4],
        schedule_id=row[5],
        charge_attempt=row[6],
        charge_pending=row[7],
    )


def _with_items(orders: Any, *order_by: ColumnElement[Any]) -> Select[Any]:
    """Join a selectable of order rows to their items, items in their original order."""
    return (
        select(*(orders.c[column.name] for column in _ORDER_COLUMNS), *_ITEM_COLUMNS)
        .select_from(orders)
        .outerjoin(items_t, items_t.c.order_id == orders.c.id)
        .order_by(*order_by, items_t.c.position)
    )


# The read statements are built once, with bound parameters: building a Core statement costs
# more than running it (about 0.4 ms for _ONE, 0.6 ms for a page), and a built statement's
# compiled form comes straight from the compiled cache.
_ONE = _with_items(
    select(*_ORDER_COLUMNS)
    .where(orders_t.c.id == bindparam("order_id"), orders_t.c.owner == bindparam("owner"))
    .subquery("o")
)


@cache
def _page(cancelled: bool | None, limited: bool) -> Select[Any]:
    """The page query for this filter; `owner` and `limit` are bound when it runs."""
    page = select(*_ORDER_COLUMNS).where(orders_t.c.owner == bindparam("owner"))
    if cancelled is not None:
        is_cancelled = orders_t.c.status == OrderStatus.CANCELLED.value
        page = page.where(is_cancelled if cancelled else ~is_cancelled)
    page = page.order_by(orders_t.c.created.desc(), orders_t.c.id.desc())
    if limited:
        page = page.limit(bindparam("limit", type_=Integer))
    sub = page.subquery("o")
    return _with_items(sub, sub.c.created.desc(), sub.c.id.desc())


def _free(
    order_id: UUID, owner: str, allowed: frozenset[OrderStatus], *, paying: bool = False
) -> list[Any]:
    """Conditions of a guarded write: mine, in an allowed status, no live claim on it, and
    (unless paying, which is how it is settled) no charge of unknown outcome."""
    conditions = [
        orders_t.c.id == order_id,
        orders_t.c.owner == owner,
        orders_t.c.status.in_(sorted(allowed)),
        or_(orders_t.c.action.is_(None), orders_t.c.action_expires < func.now()),
    ]
    if not paying:
        conditions.append(orders_t.c.charge_pending.is_(False))
    return conditions


_UNCLAIMED = {"action": None, "action_token": None, "action_expires": None}


class SqlOrderRepository:
    """The orders of one transaction (see SqlUnitOfWork)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, order: Order) -> None:
        params = _item_arrays(order.id, order.items)
        params.update(owner=order.owner, created=order.created)
        await self._connection.execute(_PLACE, params)

    async def get(self, order_id: UUID, owner: str) -> Order | None:
        result = await self._connection.execute(_ONE, {"order_id": order_id, "owner": owner})
        orders = _to_orders(result)
        return orders[0] if orders else None

    async def replace_items(
        self,
        order_id: UUID,
        owner: str,
        items: Sequence[OrderItem],
        allowed: frozenset[OrderStatus],
    ) -> Order | None:
        result = await self._connection.execute(
            update(orders_t)
            .where(*_free(order_id, owner, allowed))
            .values(updated=func.now())
            .returning(*_ORDER_COLUMNS)
        )
        row = result.first()
        if row is None:
            return None
        await self._connection.execute(items_t.delete().where(items_t.c.order_id == order_id))
        await self._connection.execute(_REPLACE_ITEMS, _item_arrays(order_id, items))
        return _to_order(row, list(items))

    async def delete(self, order_id: UUID, owner: str, allowed: frozenset[OrderStatus]) -> bool:
        result = await self._connection.execute(
            orders_t.delete().where(*_free(order_id, owner, allowed)).returning(orders_t.c.id)
        )
        return result.first() is not None

    async def claim(
        self,
        order_id: UUID,
        owner: str,
        action: Action,
        allowed: frozenset[OrderStatus],
        token: UUID,
        lease: timedelta,
    ) -> Order | None:
        paying = action is Action.PAY
        values: dict[str, Any] = {
            "action": action.value,
            "action_token": token,
            "action_expires": func.now() + lease,
            "updated": func.now(),
        }
        if paying:
            # From `created` a charge is about to be asked for: pending until its outcome is known.
            values["charge_pending"] = orders_t.c.charge_pending | (
                orders_t.c.status == OrderStatus.CREATED.value
            )
        claimed = (
            await self._connection.execute(
                update(orders_t)
                .where(*_free(order_id, owner, allowed, paying=paying))
                .values(values)
                .returning(*_ORDER_COLUMNS)
            )
        ).first()
        if claimed is None:
            return None
        # A statement of its own: it sees the items as they are now, after a PUT this claim
        # may have waited for, where a join in the UPDATE would see them as they were before.
        items = await self._connection.execute(
            select(*_ITEM_COLUMNS)
            .where(items_t.c.order_id == order_id)
            .order_by(items_t.c.position)
        )
        return _to_order(
            claimed,
            [OrderItem(product, _SIZE[size], quantity) for product, size, quantity in items],
        )

    async def record_payment(self, order_id: UUID, token: UUID, payment_id: UUID) -> bool:
        recorded = (
            await self._connection.execute(
                update(orders_t)
                .where(
                    orders_t.c.id == order_id,
                    orders_t.c.status == OrderStatus.CREATED.value,
                )
                .values(
                    status=OrderStatus.PAID.value,
                    payment_id=payment_id,
                    charge_pending=False,
                    updated=func.now(),
                )
                .returning(orders_t.c.action_token)
            )
        ).first()
        return recorded is not None and recorded[0] == token

    async def settle(
        self,
        order_id: UUID,
        token: UUID,
        status: OrderStatus,
        schedule_id: str | None = None,
    ) -> Order | None:
        values: dict[str, Any] = {"status": status.value, "updated": func.now(), **_UNCLAIMED}
        if schedule_id is not None:
            values["schedule_id"] = schedule_id
        settled = (
            update(orders_t)
            .where(orders_t.c.id == order_id, orders_t.c.action_token == token)
            .values(values)
            .returning(*_ORDER_COLUMNS)
            .cte("settled")
        )
        orders = _to_orders(await self._connection.execute(_with_items(settled)))
        return orders[0] if orders else None

    async def release(
        self, order_id: UUID, token: UUID, *, refused: bool = False, uncharged: bool = False
    ) -> None:
        values: dict[str, Any] = dict(_UNCLAIMED)
        if refused:
            values["charge_attempt"] = orders_t.c.charge_attempt + 1
        if refused or uncharged:
            values["charge_pending"] = False
        await self._connection.execute(
            update(orders_t)
            .where(orders_t.c.id == order_id, orders_t.c.action_token == token)
            .values(values)
        )


class _Compiled:
    """A statement compiled once for a dialect: its SQL and its parameters in order, the
    values fixed in the statement (e.g. a status compared with) filled in."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._fixed: dict[str, Any] = {}
        for name in self._names:
            bind = compiled.binds[name]
            if bind.expanding or bind.type.dialect_impl(dialect).bind_processor(dialect):
                raise TypeError(f"parameter {name!r} needs SQLAlchemy's parameter processing")
            if not bind.required:
                self._fixed[name] = bind.effective_value

    def args(self, params: dict[str, Any]) -> list[Any]:
        values = {**self._fixed, **params}
        return [values[name] for name in self._names]


class SqlOrderViews:
    """Read-only queries: one statement each, in autocommit (no BEGIN/ROLLBACK round trips).

    Each statement is compiled once and sent straight to the driver (see `driver_fetch`):
    SQLAlchemy's execution layer costs about as much again as the query itself. Such reads
    do not show in SQLAlchemy's cursor events; asyncpg's query log sees them.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._one = _Compiled(_ONE, engine.dialect)
        self._pages: dict[tuple[bool | None, bool], _Compiled] = {}

    async def get(self, order_id: UUID, owner: str) -> Order | None:
        orders = _to_orders(await self._fetch(self._one, {"order_id": order_id, "owner": owner}))
        return orders[0] if orders else None

    async def list(
        self, owner: str, *, cancelled: bool | None = None, limit: int | None = None
    ) -> list[Order]:
        variant = (cancelled, limit is not None)
        page = self._pages.get(variant)
        if page is None:
            page = self._pages[variant] = _Compiled(_page(*variant), self._engine.dialect)
        return _to_orders(await self._fetch(page, {"owner": owner, "limit": limit}))

    async def _fetch(self, statement: _Compiled, params: dict[str, Any]) -> Sequence[Any]:
        return await driver_fetch(self._engine, statement.sql, statement.args(params))
