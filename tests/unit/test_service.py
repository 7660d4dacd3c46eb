"""The use cases with in-memory fakes of every port: no database, no network.

The fake repository is a dict of orders; the unit of work copies it and keeps the copy only
on commit, like a transaction. Payments and kitchen are scripted: each call takes the next
outcome from a queue (an exception to raise, or nothing for success).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, TypeGuard
from uuid import UUID, uuid4

import pytest

from orders.domain import (
    Action,
    ActionInProgress,
    EventType,
    Order,
    OrderEvent,
    OrderItem,
    OrderNotFound,
    OrderStatus,
    OrderView,
    OutcomePending,
    Pending,
    RefundStatus,
    Size,
    VersionMismatch,
)
from orders.service.idempotency import AlreadyAnswered, Idempotent, KeyReused
from orders.service.orders import OrderService
from orders.service.ports import (
    CollaboratorBadAnswer,
    CollaboratorError,
    CollaboratorTimeout,
    CollaboratorUnavailable,
    KeyRecord,
    PaymentRefused,
    PendingCount,
    RefundRefused,
    RequestKey,
    StoredAnswer,
)

ITEMS = (OrderItem("latte", Size.BIG, 2),)
LEASE = timedelta(seconds=60)


class FakeRepository:
    def __init__(self, orders: dict[UUID, Order], outbox: list[OrderEvent]) -> None:
        self.orders = orders
        self.outbox = outbox

    async def get(self, order_id: UUID, owner: str, *, for_update: bool = False) -> Order | None:
        order = self.orders.get(order_id)
        return copy.deepcopy(order) if order is not None and order.owner == owner else None

    async def find(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        order = self.orders.get(order_id)
        return copy.deepcopy(order) if order is not None else None

    async def add(self, order: Order) -> None:
        await self.save(order)

    async def save(self, order: Order) -> None:
        self.outbox.extend(order.events)
        order.events.clear()
        self.orders[order.id] = copy.deepcopy(order)

    async def delete(self, order: Order) -> None:
        self.outbox.extend(order.events)
        del self.orders[order.id]

    async def due(self, now: datetime, limit: int) -> list[Order]:
        due = sorted(
            (order for order in self.orders.values() if order.due is not None and order.due <= now),
            key=lambda order: order.due or now,
        )
        return [copy.deepcopy(order) for order in due[:limit]]


class FakeKeys:
    """Idempotency keys of one unit of work: a dict, kept on commit."""

    def __init__(self, keys: dict[tuple[str, str], tuple[KeyRecord, datetime]]) -> None:
        self.keys = keys

    async def add(
        self, key: RequestKey, answer: StoredAnswer, now: datetime, expires: datetime
    ) -> KeyRecord | None:
        found = self.keys.get((key.owner, key.key))
        if found is not None and found[1] > now:
            return found[0]
        self.keys[key.owner, key.key] = (KeyRecord(key.fingerprint, answer), expires)
        return None


class FakeInbox:
    def __init__(self, handled: set[str]) -> None:
        self.handled = handled

    async def add(self, message_id: str) -> bool:
        if message_id in self.handled:
            return False
        self.handled.add(message_id)
        return True


class FakeStore:
    def __init__(self) -> None:
        self.orders: dict[UUID, Order] = {}
        self.outbox: list[OrderEvent] = []
        self.keys: dict[tuple[str, str], tuple[KeyRecord, datetime]] = {}
        self.inbox: set[str] = set()


class FakeUnitOfWork:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def __aenter__(self) -> Self:
        self.orders = FakeRepository(dict(self.store.orders), list(self.store.outbox))
        self.keys = FakeKeys(dict(self.store.keys))
        self.inbox = FakeInbox(set(self.store.inbox))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def commit(self) -> None:
        self.store.orders = self.orders.orders
        self.store.outbox = self.orders.outbox
        self.store.keys = self.keys.keys
        self.store.inbox = self.inbox.handled


class FakeViews:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def get(self, order_id: UUID, owner: str) -> OrderView | None:
        order = self.store.orders.get(order_id)
        return order.view() if order is not None and order.owner == owner else None

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        cancelled: bool | None = None,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[OrderView]:
        mine = [
            order.view()
            for order in self.store.orders.values()
            if order.owner == owner and (after is None or (order.created, order.id) < after)
        ]
        return sorted(mine, key=lambda view: (view.created, view.id), reverse=True)[:limit]

    async def pending(self) -> Sequence[PendingCount]:
        return []


Script = list[Exception | None]


def takes_effect(outcome: Exception | None) -> TypeGuard[CollaboratorError | None]:
    """A scripted failure of unknown outcome takes effect before it fails (the worst case);
    a refusal, or a failure known to have had no effect, does not."""
    return outcome is None or (isinstance(outcome, CollaboratorError) and outcome.unknown_outcome)


class FakePayments:
    def __init__(self) -> None:
        self.charges: Script = []
        self.refunds: Script = []
        self.charge_calls: list[str] = []
        self.refund_calls: list[str] = []
        # What took effect, by idempotency key.
        self.payments: dict[str, UUID] = {}
        self.refunded: dict[str, UUID] = {}

    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        self.charge_calls.append(idempotency_key)
        outcome = self.charges.pop(0) if self.charges else None
        if not takes_effect(outcome):
            raise outcome
        payment_id = self.payments.setdefault(idempotency_key, uuid4())
        if outcome is not None:
            raise outcome  # it took effect; the answer is lost
        return payment_id

    async def refund(self, payment_id: UUID, idempotency_key: str) -> UUID:
        self.refund_calls.append(idempotency_key)
        outcome = self.refunds.pop(0) if self.refunds else None
        if not takes_effect(outcome):
            raise outcome
        refund_id = self.refunded.setdefault(idempotency_key, uuid4())
        if outcome is not None:
            raise outcome
        return refund_id


class FakeKitchen:
    def __init__(self) -> None:
        self.schedules: Script = []
        self.cancels: Script = []
        self.scheduled: dict[UUID, str] = {}
        self.cancelled: list[str] = []

    async def schedule(self, order_id: UUID, items: Sequence[OrderItem]) -> str:
        outcome = self.schedules.pop(0) if self.schedules else None
        if not takes_effect(outcome):
            raise outcome
        schedule_id = self.scheduled.setdefault(order_id, f"schedule-{len(self.scheduled)}")
        if outcome is not None:
            raise outcome
        return schedule_id

    async def cancel(self, schedule_id: str) -> None:
        outcome = self.cancels.pop(0) if self.cancels else None
        if outcome is not None:
            raise outcome
        self.cancelled.append(schedule_id)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.payments = FakePayments()
        self.kitchen = FakeKitchen()
        self.clock = Clock()
        self.service = OrderService(
            lambda: FakeUnitOfWork(self.store),
            FakeViews(self.store),
            self.payments,
            self.kitchen,
            lease=LEASE,
            clock=self.clock,
        )

    def order(self, order_id: UUID) -> Order:
        return self.store.orders[order_id]

    def events(self, order_id: UUID) -> list[EventType]:
        return [event.type for event in self.store.outbox if event.order_id == order_id]

    async def place(self) -> UUID:
        return (await self.service.place_order("alice", ITEMS)).id


@pytest.fixture
def world() -> World:
    return World()


def unknown(service: str = "payments") -> CollaboratorBadAnswer:
    return CollaboratorBadAnswer(service, "answered 500")


async def test_place_get_and_list(world: World) -> None:
    first = await world.place()
    world.clock.advance(1)
    second = await world.place()

    assert (await world.service.get_order(first, "alice")).status is OrderStatus.CREATED
    page = await world.service.list_orders("alice", limit=10)
    assert [view.id for view in page.orders] == [second, first]
    assert not page.more
    assert world.events(first) == [EventType.PLACED]


async def test_a_page_says_whether_more_follow(world: World) -> None:
    placed = []
    for _ in range(3):
        placed.append(await world.place())
        world.clock.advance(1)

    first = await world.service.list_orders("alice", limit=2)
    last = first.orders[-1]
    rest = await world.service.list_orders("alice", limit=2, after=(last.created, last.id))

    assert ([v.id for v in first.orders], first.more) == ([placed[2], placed[1]], True)
    assert ([v.id for v in rest.orders], rest.more) == ([placed[0]], False)


def _keyed(key: str, fingerprint: bytes = b"request") -> Idempotent:
    return Idempotent(
        RequestKey("alice", key, fingerprint),
        lambda view: StoredAnswer(201, str(view.id).encode(), f"/orders/{view.id}", "tag"),
    )


async def test_a_key_places_one_order_and_replays_its_answer(world: World) -> None:
    placed = await world.service.place_order("alice", ITEMS, key=_keyed("k"))

    with pytest.raises(AlreadyAnswered) as replay:
        await world.service.place_order("alice", ITEMS, key=_keyed("k"))

    assert replay.value.answer.body == str(placed.id).encode()
    assert list(world.store.orders) == [placed.id]


async def test_a_key_reused_for_another_request_places_nothing(world: World) -> None:
    await world.service.place_order("alice", ITEMS, key=_keyed("k"))

    with pytest.raises(KeyReused):
        await world.service.place_order("alice", ITEMS, key=_keyed("k", b"another"))

    assert len(world.store.orders) == 1


async def test_an_expired_key_is_a_new_key(world: World) -> None:
    await world.service.place_order("alice", ITEMS, key=_keyed("k"))
    world.clock.advance(timedelta(days=2).total_seconds())

    await world.service.place_order("alice", ITEMS, key=_keyed("k"))

    assert len(world.store.orders) == 2


async def test_a_change_to_another_version_is_refused_and_changes_nothing(world: World) -> None:
    order_id = await world.place()
    before = copy.deepcopy(world.store.orders[order_id])

    for change in (
        world.service.update_order(order_id, "alice", ITEMS, if_match=frozenset({7})),
        world.service.delete_order(order_id, "alice", if_match=frozenset()),
        world.service.pay(order_id, "alice", if_match=frozenset({0, 2})),
        world.service.cancel(order_id, "alice", if_match=frozenset({2})),
    ):
        with pytest.raises(VersionMismatch):
            await change

    after = world.store.orders[order_id]
    assert (after.version, after.status, after.claim) == (before.version, before.status, None)
    paid = await world.service.pay(order_id, "alice", if_match=frozenset({before.version}))
    assert paid.status is OrderStatus.PROGRESS


async def test_others_orders_are_not_found(world: World) -> None:
    order_id = await world.place()

    for attempt in (
        world.service.get_order(order_id, "bob"),
        world.service.update_order(order_id, "bob", ITEMS),
        world.service.delete_order(order_id, "bob"),
        world.service.pay(order_id, "bob"),
        world.service.cancel(order_id, "bob"),
    ):
        with pytest.raises(OrderNotFound):
            await attempt


async def test_pay_charges_once_then_schedules(world: World) -> None:
    order_id = await world.place()

    view = await world.service.pay(order_id, "alice")

    assert view.status is OrderStatus.PROGRESS
    assert world.payments.charge_calls == [f"{order_id}:0"]
    order = world.order(order_id)
    assert order.claim is None
    assert order.pending == frozenset()
    assert order.due is None
    assert world.events(order_id) == [EventType.PLACED, EventType.PAID, EventType.SCHEDULED]


async def test_a_refusal_changes_nothing_and_moves_to_the_next_attempt(world: World) -> None:
    order_id = await world.place()
    world.payments.charges.append(PaymentRefused(order_id))

    with pytest.raises(PaymentRefused):
        await world.service.pay(order_id, "alice")
    await world.service.pay(order_id, "alice")

    assert world.payments.charge_calls == [f"{order_id}:0", f"{order_id}:1"]


async def test_a_charge_that_never_left_leaves_nothing_pending(world: World) -> None:
    order_id = await world.place()
    world.payments.charges.append(
        CollaboratorUnavailable("payments", "could not be reached", unknown_outcome=False)
    )

    with pytest.raises(CollaboratorUnavailable):
        await world.service.pay(order_id, "alice")

    order = world.order(order_id)
    assert order.pending == frozenset()
    assert order.claim is None
    assert order.due is None
    await world.service.update_order(order_id, "alice", ITEMS)


async def test_an_unknown_charge_stays_pending_and_the_reconciler_settles_it(
    world: World,
) -> None:
    order_id = await world.place()
    world.payments.charges.append(CollaboratorTimeout("payments", "did not answer in time"))

    with pytest.raises(CollaboratorTimeout):
        await world.service.pay(order_id, "alice")
    assert world.order(order_id).pending == {Pending.CHARGE}
    with pytest.raises(OutcomePending):
        await world.service.cancel(order_id, "alice")

    assert await world.service.resolve_due(10) == 0  # not before its back-off
    world.clock.advance(5)
    assert await world.service.resolve_due(10) == 1

    order = world.order(order_id)
    assert order.status is OrderStatus.PROGRESS
    assert order.pending == frozenset()
    # Same key both times: one payment.
    assert world.payments.charge_calls == [f"{order_id}:0"] * 2
    assert len(world.payments.payments) == 1


async def test_a_kitchen_turning_down_the_schedule_leaves_the_order_paid(world: World) -> None:
    order_id = await world.place()
    world.kitchen.schedules.append(
        CollaboratorBadAnswer("kitchen", "answered 422", unknown_outcome=False)
    )

    with pytest.raises(CollaboratorBadAnswer):
        await world.service.pay(order_id, "alice")
    order = world.order(order_id)
    assert order.status is OrderStatus.PAID
    assert order.pending == frozenset()

    assert (await world.service.pay(order_id, "alice")).status is OrderStatus.PROGRESS
    assert len(world.payments.charge_calls) == 1


async def test_a_live_claim_refuses_a_second_pay(world: World) -> None:
    order_id = await world.place()
    world.order(order_id).take(Action.PAY, uuid4(), world.clock(), LEASE)

    with pytest.raises(ActionInProgress):
        await world.service.pay(order_id, "alice")
    assert world.payments.charge_calls == []


async def test_a_claim_left_by_a_dead_process_is_completed_by_the_reconciler(
    world: World,
) -> None:
    order_id = await world.place()
    # A request claimed the order to pay, sent the charge (it took effect) and died.
    world.payments.charges.append(unknown())
    with pytest.raises(CollaboratorBadAnswer):
        await world.service.pay(order_id, "alice")
    world.order(order_id).claim = None

    world.clock.advance(LEASE.total_seconds())
    await world.service.resolve_due(10)

    order = world.order(order_id)
    assert order.status is OrderStatus.PROGRESS
    assert len(world.payments.payments) == 1


async def test_cancelling_a_charged_order_refunds_it(world: World) -> None:
    order_id = await world.place()
    await world.service.pay(order_id, "alice")

    view = await world.service.cancel(order_id, "alice")

    assert view.status is OrderStatus.CANCELLED
    order = world.order(order_id)
    assert order.refund is RefundStatus.REFUNDED
    assert order.claim is None
    assert world.kitchen.cancelled == [order.schedule_id]
    assert world.payments.refund_calls == [f"{order_id}:refund"]
    assert world.events(order_id)[-2:] == [EventType.CANCELLED, EventType.REFUNDED]


async def test_an_unconfirmed_refund_is_asked_for_again_until_confirmed(world: World) -> None:
    order_id = await world.place()
    await world.service.pay(order_id, "alice")
    world.payments.refunds.extend([unknown(), unknown()])

    view = await world.service.cancel(order_id, "alice")

    assert view.status is OrderStatus.CANCELLED
    assert world.order(order_id).refund is RefundStatus.OWED
    for _ in range(3):
        world.clock.advance(60)
        await world.service.resolve_due(10)
    order = world.order(order_id)
    assert order.refund is RefundStatus.REFUNDED
    assert order.pending == frozenset()
    assert world.payments.refund_calls == [f"{order_id}:refund"] * 3
    assert len(world.payments.refunded) == 1


async def test_a_refused_refund_keeps_the_cancellation(world: World) -> None:
    order_id = await world.place()
    await world.service.pay(order_id, "alice")
    payment_id = world.order(order_id).payment_id
    assert payment_id is not None
    world.payments.refunds.append(RefundRefused(payment_id, "invalid"))

    view = await world.service.cancel(order_id, "alice")

    assert view.status is OrderStatus.CANCELLED
    order = world.order(order_id)
    assert order.refund is RefundStatus.REFUSED
    assert order.due is None


async def test_a_kitchen_refusing_to_cancel_leaves_the_order_in_progress(world: World) -> None:
    order_id = await world.place()
    await world.service.pay(order_id, "alice")
    world.kitchen.cancels.append(
        CollaboratorBadAnswer("kitchen", "refused to cancel", unknown_outcome=False)
    )

    with pytest.raises(CollaboratorBadAnswer):
        await world.service.cancel(order_id, "alice")

    order = world.order(order_id)
    assert order.status is OrderStatus.PROGRESS
    assert order.claim is None
    assert world.payments.refund_calls == []


async def test_cancel_finds_a_schedule_whose_outcome_was_unknown(world: World) -> None:
    """The orphaned schedule: the kitchen made it, the answer was lost."""
    order_id = await world.place()
    world.kitchen.schedules.append(CollaboratorTimeout("kitchen", "did not answer in time"))
    with pytest.raises(CollaboratorTimeout):
        await world.service.pay(order_id, "alice")
    assert world.order(order_id).pending == {Pending.SCHEDULE}

    await world.service.cancel(order_id, "alice")

    schedule_id = world.kitchen.scheduled[order_id]
    assert world.kitchen.cancelled == [schedule_id]
    order = world.order(order_id)
    assert order.status is OrderStatus.CANCELLED
    assert order.refund is RefundStatus.REFUNDED


async def test_delete_and_update_follow_the_aggregate(world: World) -> None:
    order_id = await world.place()
    await world.service.update_order(order_id, "alice", ITEMS)
    await world.service.delete_order(order_id, "alice")

    assert order_id not in world.store.orders
    assert world.events(order_id) == [EventType.PLACED, EventType.UPDATED, EventType.DELETED]
