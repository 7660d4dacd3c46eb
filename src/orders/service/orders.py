"""The use cases: place, get, list, update, delete, pay and cancel an order.

Every write is one unit of work with one explicit commit. Pay and cancel talk to other
services, so they never hold a transaction open across a call: they first claim the order
(a guarded UPDATE that only one request can win), call out, then settle the claim. A claim
is a lease: if the process dies mid-call, the order is free again once the lease runs out,
and the idempotency key sent with each call keeps a retry from charging twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NoReturn
from uuid import UUID, uuid4

from orders.domain import (
    ALLOWED_FROM,
    Action,
    ActionInProgress,
    Order,
    OrderItem,
    OrderNotFound,
    OrderStatus,
)
from orders.service.ports import (
    CollaboratorError,
    Kitchen,
    OrderViews,
    PaymentRefused,
    Payments,
    UnitOfWork,
)

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OrderService:
    """The orders use cases, wired to their ports."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        views: OrderViews,
        payments: Payments,
        kitchen: Kitchen,
        *,
        lease: timedelta,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._uow = unit_of_work
        self._views = views
        self._payments = payments
        self._kitchen = kitchen
        self._lease = lease
        self._clock = clock

    async def place_order(self, owner: str, items: Sequence[OrderItem]) -> Order:
        order = Order(
            id=uuid4(),
            owner=owner,
            created=self._clock(),
            status=OrderStatus.CREATED,
            items=tuple(items),
        )
        async with self._uow() as uow:
            await uow.orders.add(order)
            await uow.commit()
        return order

    async def get_order(self, order_id: UUID, owner: str) -> Order:
        order = await self._views.get(order_id, owner)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def list_orders(
        self, owner: str, *, cancelled: bool | None = None, limit: int | None = None
    ) -> list[Order]:
        return await self._views.list(owner, cancelled=cancelled, limit=limit)

    async def update_order(self, order_id: UUID, owner: str, items: Sequence[OrderItem]) -> Order:
        async with self._uow() as uow:
            order = await uow.orders.replace_items(
                order_id, owner, items, ALLOWED_FROM[Action.UPDATE]
            )
            if order is None:
                await self._refuse(uow, order_id, owner, Action.UPDATE)
            await uow.commit()
        return order

    async def delete_order(self, order_id: UUID, owner: str) -> None:
        async with self._uow() as uow:
            if not await uow.orders.delete(order_id, owner, ALLOWED_FROM[Action.DELETE]):
                await self._refuse(uow, order_id, owner, Action.DELETE)
            await uow.commit()

    async def pay(self, order_id: UUID, owner: str) -> Order:
        """Charge (unless an earlier attempt already did), then schedule in the kitchen."""
        order, token = await self._claim(order_id, owner, Action.PAY)
        uncharged = False
        try:
            if order.needs_charge:
                try:
                    payment_id = await self._payments.charge(order.id, order.charge_key)
                except CollaboratorError as error:
                    # Unless the request surely did not take effect, the charge stays pending.
                    uncharged = not error.delivered
                    raise
                async with self._uow() as uow:
                    still_ours = await uow.orders.record_payment(order.id, token, payment_id)
                    await uow.commit()
                logger.info("order %s charged (payment %s)", order.id, payment_id)
                if not still_ours:
                    # The lease ran out mid-call and another request holds the order now: the
                    # charge is recorded, scheduling is left to that request.
                    raise ActionInProgress(order.id, Action.PAY)
            schedule_id = await self._kitchen.schedule(order)
            return await self._settle(
                order.id, token, Action.PAY, OrderStatus.PROGRESS, schedule_id
            )
        except PaymentRefused:
            await self._release(order.id, token, refused=True)
            raise
        except Exception:
            await self._release(order.id, token, uncharged=uncharged)
            raise

    async def cancel(self, order_id: UUID, owner: str) -> Order:
        """Cancel; an order in progress is first taken off the kitchen's schedule."""
        order, token = await self._claim(order_id, owner, Action.CANCEL)
        try:
            if order.status is OrderStatus.PROGRESS and order.schedule_id is not None:
                await self._kitchen.cancel(order.schedule_id)
            return await self._settle(order.id, token, Action.CANCEL, OrderStatus.CANCELLED)
        except Exception:
            await self._release(order.id, token)
            raise

    async def _claim(self, order_id: UUID, owner: str, action: Action) -> tuple[Order, UUID]:
        token = uuid4()
        async with self._uow() as uow:
            order = await uow.orders.claim(
                order_id, owner, action, ALLOWED_FROM[action], token, self._lease
            )
            if order is None:
                await self._refuse(uow, order_id, owner, action)
            await uow.commit()
        return order, token

    async def _settle(
        self,
        order_id: UUID,
        token: UUID,
        action: Action,
        status: OrderStatus,
        schedule_id: str | None = None,
    ) -> Order:
        async with self._uow() as uow:
            order = await uow.orders.settle(order_id, token, status, schedule_id)
            if order is None:
                # The lease ran out and another request took the order over meanwhile.
                raise ActionInProgress(order_id, action)
            await uow.commit()
        return order

    async def _release(
        self, order_id: UUID, token: UUID, *, refused: bool = False, uncharged: bool = False
    ) -> None:
        try:
            async with self._uow() as uow:
                await uow.orders.release(order_id, token, refused=refused, uncharged=uncharged)
                await uow.commit()
        except Exception:
            # The lease frees the order on its own; the original error is what the caller needs.
            logger.warning("could not release the claim on order %s", order_id, exc_info=True)

    @staticmethod
    async def _refuse(uow: UnitOfWork, order_id: UUID, owner: str, action: Action) -> NoReturn:
        """Explain why a guarded write matched nothing, by raising the fitting domain error."""
        order = await uow.orders.get(order_id, owner)
        if order is None:
            raise OrderNotFound(order_id)
        order.check(action)
        raise ActionInProgress(order_id, action)
