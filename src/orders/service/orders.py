"""The use cases: place, get, list, update, delete, pay and cancel an order, and completing
what was left unfinished.

Each step is one unit of work: load the order, let it decide, save it, commit. Pay and cancel
talk to payments and kitchen, so they never hold a transaction open across a call: they take
a claim on the order (a lease), call out, and record each outcome in a step of its own. What
may have taken effect without us knowing stays pending on the order and is repeated with the
same idempotency key, by the next request or by the reconciler, until its outcome is known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from orders.domain import (
    Action,
    ActionInProgress,
    DomainError,
    Order,
    OrderItem,
    OrderNotFound,
    OrderStatus,
    OrderView,
    RefundStatus,
)
from orders.service.idempotency import Idempotent, refuse
from orders.service.ports import (
    CollaboratorError,
    Kitchen,
    OrderViews,
    PaymentRefused,
    Payments,
    RefundRefused,
    ServiceError,
    UnitOfWork,
)

logger = logging.getLogger(__name__)

Change = Callable[[Order, datetime], None]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list; `more` says whether orders follow it."""

    orders: list[OrderView]
    more: bool


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OrderService:
    """The orders use cases, wired to their ports.

    `lease` is how long a claim holds an order; `retry_base` and `retry_max` bound the
    back-off between tries of an outcome that stays unknown; `key_ttl` how long an
    idempotency key of a placed order is kept.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        views: OrderViews,
        payments: Payments,
        kitchen: Kitchen,
        *,
        lease: timedelta,
        retry_base: timedelta = timedelta(seconds=1),
        retry_max: timedelta = timedelta(minutes=5),
        key_ttl: timedelta = timedelta(days=1),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._uow = unit_of_work
        self._views = views
        self._payments = payments
        self._kitchen = kitchen
        self._lease = lease
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._key_ttl = key_ttl
        self._clock = clock

    # Reads.

    async def get_order(self, order_id: UUID, owner: str) -> OrderView:
        order = await self._views.get(order_id, owner)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def list_orders(
        self,
        owner: str,
        *,
        limit: int,
        cancelled: bool | None = None,
        after: tuple[datetime, UUID] | None = None,
    ) -> Page:
        """Up to `limit` of the caller's orders, newest first, after the order at `after`
        (created, id) when given."""
        # One more than asked for tells whether another page follows, in the same statement.
        views = await self._views.list(owner, cancelled=cancelled, limit=limit + 1, after=after)
        return Page(views[:limit], more=len(views) > limit)

    # Changes that need no other service.

    async def place_order(
        self, owner: str, items: Sequence[OrderItem], *, key: Idempotent | None = None
    ) -> OrderView:
        """Place an order. With a key, the key and its answer are stored in the order's own
        transaction; a request that finds the key answered raises AlreadyAnswered (or
        KeyReused for another request) and places nothing."""
        now = self._clock()
        order = Order.place(uuid4(), owner, tuple(items), now)
        view = order.view()
        async with self._uow() as uow:
            if key is not None:
                # First, so that a concurrent request with the key waits here for this one.
                found = await uow.keys.add(key.key, key.answer(view), now, now + self._key_ttl)
                if found is not None:
                    refuse(found, key.key)
            await uow.orders.add(order)
            await uow.commit()
        return view

    async def update_order(
        self,
        order_id: UUID,
        owner: str,
        items: Sequence[OrderItem],
        *,
        if_match: frozenset[int] | None = None,
    ) -> OrderView:
        """Replace the items; `if_match`, when given, are the versions the caller may change
        (checked on the locked order, so that no change slips in between)."""
        async with self._uow() as uow:
            order = await self._load(uow, order_id, owner)
            order.expect(if_match)
            order.replace_items(tuple(items), self._clock())
            await uow.orders.save(order)
            await uow.commit()
        return order.view()

    async def delete_order(
        self, order_id: UUID, owner: str, *, if_match: frozenset[int] | None = None
    ) -> None:
        async with self._uow() as uow:
            order = await self._load(uow, order_id, owner)
            order.expect(if_match)
            order.delete(self._clock())
            await uow.orders.delete(order)
            await uow.commit()

    # Pay and cancel.

    async def pay(
        self, order_id: UUID, owner: str, *, if_match: frozenset[int] | None = None
    ) -> OrderView:
        """Charge (unless an earlier attempt already did), then schedule in the kitchen."""
        order, token = await self._take(order_id, owner, Action.PAY, if_match)
        order = await self._pay(order, token)
        if order.status is not OrderStatus.PROGRESS:
            # The charge is recorded, but another request took the order over meanwhile and
            # completes the scheduling.
            raise ActionInProgress(order.id, Action.PAY)
        return order.view()

    async def cancel(
        self, order_id: UUID, owner: str, *, if_match: frozenset[int] | None = None
    ) -> OrderView:
        """Cancel: the kitchen first gives up the order, then a charged order is refunded."""
        order, token = await self._take(order_id, owner, Action.CANCEL, if_match)
        return (await self._cancel(order, token)).view()

    async def resolve_due(self, limit: int) -> int:
        """Take up to `limit` orders left unfinished (a pending outcome whose time has come,
        or a claim whose holder is gone) and complete them; return how many were taken.

        Locked rows are skipped, so any number of workers and replicas share the work and
        never take the same order at once.
        """
        now = self._clock()
        taken: list[tuple[Order, UUID, Action]] = []
        async with self._uow() as uow:
            for order in await uow.orders.due(now, limit):
                token = uuid4()
                action = order.resume(token, now, self._lease)
                if action is not None:
                    await uow.orders.save(order)
                    taken.append((order, token, action))
            await uow.commit()
        await asyncio.gather(*(self._complete(*each) for each in taken))
        return len(taken)

    async def _complete(self, order: Order, token: UUID, action: Action) -> None:
        what = ", ".join(sorted(order.pending)) or f"an unfinished {action}"
        try:
            if action is Action.PAY:
                order = await self._pay(order, token)
            else:
                order = await self._cancel(order, token)
        except (DomainError, ServiceError) as error:
            logger.warning("order %s: %s still unresolved (%s)", order.id, what, error)
            return
        except Exception:
            logger.exception("order %s: completing %s failed", order.id, what)
            return
        left = ", ".join(sorted(order.pending))
        logger.info(
            "order %s: resolved %s; now %s%s",
            order.id,
            what,
            order.status.value,
            f" (still pending: {left})" if left else "",
        )

    async def _take(
        self, order_id: UUID, owner: str, action: Action, if_match: frozenset[int] | None
    ) -> tuple[Order, UUID]:
        token = uuid4()
        async with self._uow() as uow:
            order = await self._load(uow, order_id, owner)
            order.expect(if_match)
            order.take(action, token, self._clock(), self._lease)
            await uow.orders.save(order)
            await uow.commit()
        return order, token

    async def _pay(self, order: Order, token: UUID) -> Order:
        if order.charge_pending:
            order = await self._charge(order, token)
        if order.schedule_pending and order.holds(token):
            order = await self._schedule(order, token)
        if order.holds(token):
            order = await self._step(order, lambda o, now: o.release(token, now))
        return order

    async def _charge(self, order: Order, token: UUID) -> Order:
        try:
            payment_id = await self._payments.charge(order.id, order.charge_key)
        except PaymentRefused:
            await self._after_failure(order, lambda o, now: o.charge_refused(now), token)
            raise
        except CollaboratorError as error:
            if error.unknown_outcome:
                await self._after_failure(order, None, token)
            else:
                await self._after_failure(order, lambda o, now: o.charge_not_taken(token), token)
            raise
        order = await self._step(order, lambda o, now: o.record_charge(payment_id, now))
        logger.info("order %s charged (payment %s)", order.id, payment_id)
        return order

    async def _schedule(self, order: Order, token: UUID) -> Order:
        """Ask the kitchen to schedule the order (again: the key finds an earlier schedule).
        A pay is done once it is recorded; a cancel holds on to the order."""
        try:
            schedule_id = await self._kitchen.schedule(order.id, order.items)
        except CollaboratorError as error:
            if error.unknown_outcome:
                await self._after_failure(order, None, token)
            else:
                await self._after_failure(order, lambda o, now: o.schedule_not_taken(token), token)
            raise

        def record(current: Order, now: datetime) -> None:
            current.record_schedule(schedule_id, now)
            if current.claim is not None and current.claim.action is Action.PAY:
                current.release(token, now)

        return await self._step(order, record)

    async def _cancel(self, order: Order, token: UUID) -> Order:
        if order.status is not OrderStatus.CANCELLED:
            if order.schedule_pending:
                # A schedule may exist whose id was never recorded: find it again.
                order = await self._schedule(order, token)
            if order.status is OrderStatus.PROGRESS and order.schedule_id is not None:
                try:
                    await self._kitchen.cancel(order.schedule_id)
                except CollaboratorError:
                    await self._after_failure(order, None, token, retry=False)
                    raise
            order = await self._step(order, lambda o, now: o.cancel(token, now))
            logger.info("order %s cancelled", order.id)
        if order.refund is RefundStatus.OWED and order.holds(token):
            try:
                order = await self._refund(order, token)
            except Exception:
                # The cancellation stands; the refund stays owed and is asked for again.
                logger.warning("order %s: recording its refund failed", order.id, exc_info=True)
        return order

    async def _refund(self, order: Order, token: UUID) -> Order:
        """Ask for the refund an order owes; never raises a collaborator's failure."""
        if order.payment_id is None:  # pragma: no cover - a refund is owed only for a payment
            raise ValueError(f"order {order.id} owes a refund without a payment")
        try:
            refund_id = await self._payments.refund(order.payment_id, order.refund_key)
        except RefundRefused as refused:
            logger.error(
                "order %s: payments refused to refund payment %s (%s); operators must settle it",
                order.id,
                order.payment_id,
                refused.reason,
            )

            def refused_for_good(current: Order, now: datetime) -> None:
                current.refund_refused()
                current.release(token, now)

            return await self._step(order, refused_for_good)
        except CollaboratorError as error:
            logger.warning("order %s: refund not confirmed yet (%s)", order.id, error)
            return await self._step(order, self._retry_later(token))

        def record(current: Order, now: datetime) -> None:
            current.record_refund(refund_id, now)
            current.release(token, now)

        order = await self._step(order, record)
        logger.info("order %s refunded (refund %s)", order.id, refund_id)
        return order

    # Steps.

    async def _load(
        self, uow: UnitOfWork, order_id: UUID, owner: str, *, for_update: bool = True
    ) -> Order:
        order = await uow.orders.get(order_id, owner, for_update=for_update)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def _step(self, order: Order, change: Change) -> Order:
        """One transaction: reload the order locked, apply `change`, save, commit."""
        async with self._uow() as uow:
            current = await self._load(uow, order.id, order.owner)
            change(current, self._clock())
            await uow.orders.save(current)
            await uow.commit()
        return current

    def _retry_later(self, token: UUID) -> Change:
        def release(order: Order, now: datetime) -> None:
            delay = min(self._retry_base * 2**order.retries, self._retry_max)
            order.release(token, now, retry_in=delay)

        return release

    async def _after_failure(
        self, order: Order, change: Change | None, token: UUID, *, retry: bool = True
    ) -> None:
        """Record what a failed call left behind and release the claim. If even that fails,
        the claim expires on its own; the caller's error is what the client needs."""
        retry_later = self._retry_later(token)

        def apply(current: Order, now: datetime) -> None:
            if change is not None:
                change(current, now)
            if retry and current.pending:
                retry_later(current, now)
            else:
                current.release(token, now)

        try:
            await self._step(order, apply)
        except Exception:
            logger.warning("could not release the claim on order %s", order.id, exc_info=True)
