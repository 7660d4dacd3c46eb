"""The use cases with in-memory fakes of every port: no database, no network."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self
from uuid import UUID

import pytest

from orders.domain import (
    Action,
    ActionInProgress,
    InvalidTransition,
    Order,
    OrderItem,
    OrderNotFound,
    OrderStatus,
    PaymentOutcomeUnknown,
    Size,
)
from orders.domain.model import ALLOWED_FROM
from orders.service.orders import OrderService
from orders.service.ports import CollaboratorTimeout, CollaboratorUnavailable, PaymentRefused

ITEMS = (OrderItem("latte", Size.BIG, 2),)


@dataclasses.dataclass
class Stored:
    order: Order
    claim: UUID | None = None


class FakeRepository:
    def __init__(self, rows: dict[UUID, Stored]) -> None:
        self.rows = rows

    def _mine(self, order_id: UUID, owner: str) -> Stored | None:
        row = self.rows.get(order_id)
        return row if row is not None and row.order.owner == owner else None

    def _free(
        self, order_id: UUID, owner: str, allowed: frozenset[OrderStatus], paying: bool = False
    ) -> Stored | None:
        row = self._mine(order_id, owner)
        if row is None or row.order.status not in allowed or row.claim is not None:
            return None
        if row.order.charge_pending and not paying:
            return None
        return row

    async def add(self, order: Order) -> None:
        self.rows[order.id] = Stored(order)

    async def get(self, order_id: UUID, owner: str) -> Order | None:
        row = self._mine(order_id, owner)
        return row.order if row else None

    async def replace_items(
        self,
        order_id: UUID,
        owner: str,
        items: Sequence[OrderItem],
        allowed: frozenset[OrderStatus],
    ) -> Order | None:
        row = self._free(order_id, owner, allowed)
        if row is None:
            return None
        row.order = dataclasses.replace(row.order, items=tuple(items))
        return row.order

    async def delete(self, order_id: UUID, owner: str, allowed: frozenset[OrderStatus]) -> bool:
        return self._free(order_id, owner, allowed) is not None and bool(self.rows.pop(order_id))

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
        row = self._free(order_id, owner, allowed, paying)
        if row is None:
            return None
        row.claim = token
        if paying and row.order.status is OrderStatus.CREATED:
            row.order = dataclasses.replace(row.order, charge_pending=True)
        return row.order

    async def record_payment(self, order_id: UUID, token: UUID, payment_id: UUID) -> bool:
        row = self.rows[order_id]
        if row.order.status is OrderStatus.CREATED:
            row.order = dataclasses.replace(
                row.order, status=OrderStatus.PAID, payment_id=payment_id, charge_pending=False
            )
            return row.claim == token
        return False

    async def settle(
        self, order_id: UUID, token: UUID, status: OrderStatus, schedule_id: str | None = None
    ) -> Order | None:
        row = self.rows[order_id]
        if row.claim != token:
            return None
        row.claim = None
        row.order = dataclasses.replace(
            row.order, status=status, schedule_id=schedule_id or row.order.schedule_id
        )
        return row.order

    async def release(
        self, order_id: UUID, token: UUID, *, refused: bool = False, uncharged: bool = False
    ) -> None:
        row = self.rows[order_id]
        if row.claim == token:
            row.claim = None
            if refused:
                attempt = row.order.charge_attempt + 1
                row.order = dataclasses.replace(row.order, charge_attempt=attempt)
            if refused or uncharged:
                row.order = dataclasses.replace(row.order, charge_pending=False)


class FakeUnitOfWork:
    """Writes go to a copy that replaces the store only on commit, like a transaction."""

    def __init__(self, store: dict[UUID, Stored]) -> None:
        self.store = store
        self.commits = 0

    async def __aenter__(self) -> Self:
        self.working = {key: dataclasses.replace(row) for key, row in self.store.items()}
        self._orders = FakeRepository(self.working)
        return self

    @property
    def orders(self) -> FakeRepository:
        return self._orders

    async def commit(self) -> None:
        self.store.clear()
        self.store.update(self.working)
        self.commits += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class FakeViews:
    def __init__(self, store: dict[UUID, Stored]) -> None:
        self.store = store

    async def get(self, order_id: UUID, owner: str) -> Order | None:
        row = self.store.get(order_id)
        return row.order if row and row.order.owner == owner else None

    async def list(
        self, owner: str, *, cancelled: bool | None = None, limit: int | None = None
    ) -> list[Order]:
        mine = [row.order for row in self.store.values() if row.order.owner == owner]
        if cancelled is not None:
            mine = [o for o in mine if (o.status is OrderStatus.CANCELLED) == cancelled]
        return sorted(mine, key=lambda o: (o.created, o.id), reverse=True)[:limit]


class FakePayments:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.fail: Exception | None = None
        self.during: Callable[[], None] | None = None

    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        self.keys.append(idempotency_key)
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        return uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key)


class FakeKitchen:
    def __init__(self) -> None:
        self.scheduled: list[UUID] = []
        self.cancelled: list[str] = []
        self.fail: Exception | None = None

    async def schedule(self, order: Order) -> str:
        if self.fail is not None:
            raise self.fail
        self.scheduled.append(order.id)
        return f"schedule-{order.id}"

    async def cancel(self, schedule_id: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.cancelled.append(schedule_id)


class World:
    def __init__(self) -> None:
        self.store: dict[UUID, Stored] = {}
        self.payments = FakePayments()
        self.kitchen = FakeKitchen()
        self.clock = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
        self.service = OrderService(
            lambda: FakeUnitOfWork(self.store),
            FakeViews(self.store),
            self.payments,
            self.kitchen,
            lease=timedelta(seconds=60),
            clock=self.tick,
        )

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def status(self, order_id: UUID) -> OrderStatus:
        return self.store[order_id].order.status

    def claimed(self, order_id: UUID) -> bool:
        return self.store[order_id].claim is not None


@pytest.fixture
def world() -> World:
    return World()


async def test_place_then_get_and_list_newest_first(world: World) -> None:
    first = await world.service.place_order("alice", ITEMS)
    second = await world.service.place_order("alice", ITEMS)
    await world.service.place_order("bob", ITEMS)

    assert await world.service.get_order(first.id, "alice") == first
    assert await world.service.list_orders("alice") == [second, first]
    assert first.status is OrderStatus.CREATED


async def test_others_orders_are_not_found(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)

    with pytest.raises(OrderNotFound):
        await world.service.get_order(order.id, "bob")
    with pytest.raises(OrderNotFound):
        await world.service.pay(order.id, "bob")


async def test_pay_charges_once_then_schedules(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)

    paid = await world.service.pay(order.id, "alice")

    assert paid.status is OrderStatus.PROGRESS
    assert world.payments.keys == [f"{order.id}:0"]
    assert world.kitchen.scheduled == [order.id]
    assert not world.claimed(order.id)


async def test_kitchen_failure_keeps_the_charge_and_a_retry_only_schedules(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.kitchen.fail = CollaboratorTimeout("kitchen", "did not answer in time")

    with pytest.raises(CollaboratorTimeout):
        await world.service.pay(order.id, "alice")
    assert world.status(order.id) is OrderStatus.PAID
    assert not world.claimed(order.id)

    world.kitchen.fail = None
    await world.service.pay(order.id, "alice")
    assert world.payments.keys == [f"{order.id}:0"]
    assert world.status(order.id) is OrderStatus.PROGRESS


async def test_a_refusal_moves_to_the_next_charge_attempt(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.payments.fail = PaymentRefused(order.id)

    with pytest.raises(PaymentRefused):
        await world.service.pay(order.id, "alice")
    world.payments.fail = None
    await world.service.pay(order.id, "alice")

    assert world.payments.keys == [f"{order.id}:0", f"{order.id}:1"]


async def test_an_unknown_payment_outcome_blocks_all_but_paying_again(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.payments.fail = CollaboratorTimeout("payments", "did not answer in time")

    with pytest.raises(CollaboratorTimeout):
        await world.service.pay(order.id, "alice")
    assert world.store[order.id].order.charge_pending
    for refused in (
        world.service.update_order(order.id, "alice", ITEMS),
        world.service.delete_order(order.id, "alice"),
        world.service.cancel(order.id, "alice"),
    ):
        with pytest.raises(PaymentOutcomeUnknown):
            await refused

    world.payments.fail = None
    await world.service.pay(order.id, "alice")

    assert world.payments.keys == [f"{order.id}:0", f"{order.id}:0"]
    assert world.status(order.id) is OrderStatus.PROGRESS
    assert not world.store[order.id].order.charge_pending


async def test_a_charge_that_never_left_is_not_pending(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.payments.fail = CollaboratorUnavailable(
        "payments", "could not be reached", delivered=False
    )

    with pytest.raises(CollaboratorUnavailable):
        await world.service.pay(order.id, "alice")

    assert not world.store[order.id].order.charge_pending
    await world.service.update_order(order.id, "alice", ITEMS)


async def test_a_charge_is_recorded_even_when_the_lease_ran_out_meanwhile(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)

    def lease_lapses_and_another_request_claims() -> None:
        world.store[order.id].claim = uuid.uuid4()

    world.payments.during = lease_lapses_and_another_request_claims

    with pytest.raises(ActionInProgress):
        await world.service.pay(order.id, "alice")

    stored = world.store[order.id].order
    assert stored.status is OrderStatus.PAID
    assert stored.payment_id is not None
    assert world.kitchen.scheduled == []


async def test_a_claimed_order_refuses_other_actions(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.store[order.id].claim = uuid.uuid4()

    for attempt in (
        world.service.pay(order.id, "alice"),
        world.service.cancel(order.id, "alice"),
        world.service.update_order(order.id, "alice", ITEMS),
        world.service.delete_order(order.id, "alice"),
    ):
        with pytest.raises(ActionInProgress):
            await attempt


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("action", list(Action))
async def test_every_action_follows_the_transition_table(
    world: World, status: OrderStatus, action: Action
) -> None:
    order = await world.service.place_order("alice", ITEMS)
    world.store[order.id].order = dataclasses.replace(order, status=status, schedule_id="s-1")
    run = {
        Action.UPDATE: lambda: world.service.update_order(order.id, "alice", ITEMS),
        Action.DELETE: lambda: world.service.delete_order(order.id, "alice"),
        Action.PAY: lambda: world.service.pay(order.id, "alice"),
        Action.CANCEL: lambda: world.service.cancel(order.id, "alice"),
    }[action]

    if status in ALLOWED_FROM[action]:
        await run()
    else:
        with pytest.raises(InvalidTransition) as refused:
            await run()
        assert (refused.value.status, refused.value.action) == (status, action)
        assert world.status(order.id) is status


async def test_cancel_in_progress_needs_the_kitchen(world: World) -> None:
    order = await world.service.place_order("alice", ITEMS)
    await world.service.pay(order.id, "alice")
    world.kitchen.fail = CollaboratorUnavailable("kitchen", "could not be reached")

    with pytest.raises(CollaboratorUnavailable):
        await world.service.cancel(order.id, "alice")
    assert world.status(order.id) is OrderStatus.PROGRESS
    assert not world.claimed(order.id)

    world.kitchen.fail = None
    cancelled = await world.service.cancel(order.id, "alice")
    assert cancelled.status is OrderStatus.CANCELLED
    assert world.kitchen.cancelled == [f"schedule-{order.id}"]


def test_order_items_validate_themselves() -> None:
    with pytest.raises(ValueError, match="product"):
        OrderItem("", Size.SMALL)
    with pytest.raises(ValueError, match="quantity"):
        OrderItem("tea", Size.SMALL, 0)
    with pytest.raises(ValueError, match="quantity"):
        OrderItem("tea", Size.SMALL, 1_000_001)
