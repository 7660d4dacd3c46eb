"""Random interleavings of everything that can happen to one order (customers' actions from
several requests, outcomes arriving late, leases running out, the reconciler taking over)
keep the aggregate's invariants: money is never forgotten, nothing pending is ever dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orders.domain import (
    Action,
    DomainError,
    Order,
    OrderItem,
    OrderStatus,
    RefundStatus,
    Size,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
ITEMS = (OrderItem("latte", Size.BIG, 2),)


class OneOrder(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.order = Order.place(uuid4(), "alice", ITEMS, T0)
        self.events = list(self.order.events)
        self.order.events.clear()
        self.tokens: list[UUID] = []
        self.payment_id = uuid4()
        self.deleted = False

    def _try(self, change: object) -> None:
        try:
            if callable(change):
                change()
        except DomainError:
            pass
        self.events.extend(self.order.events)
        self.order.events.clear()

    def token(self, index: int) -> UUID:
        return self.tokens[index % len(self.tokens)] if self.tokens else uuid4()

    @rule(seconds=st.sampled_from([0, 1, 30, 61, 600]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(action=st.sampled_from([Action.PAY, Action.CANCEL]))
    def customer_takes(self, action: Action) -> None:
        token = uuid4()
        self.tokens.append(token)
        self._try(lambda: self.order.take(action, token, self.now, LEASE))

    @rule()
    def reconciler_resumes(self) -> None:
        token = uuid4()
        self.tokens.append(token)
        self._try(lambda: self.order.resume(token, self.now, LEASE))

    @rule(index=st.integers(0, 9), retry=st.booleans())
    def holder_releases(self, index: int, retry: bool) -> None:
        delay = timedelta(seconds=5) if retry else None
        self._try(lambda: self.order.release(self.token(index), self.now, retry_in=delay))

    @rule()
    def customer_updates(self) -> None:
        self._try(lambda: self.order.replace_items(ITEMS, self.now))

    @precondition(lambda self: not self.deleted)
    @rule()
    def customer_deletes(self) -> None:
        def delete() -> None:
            self.order.delete(self.now)
            self.deleted = True

        self._try(delete)

    @precondition(lambda self: self.order.charge_pending)
    @rule(outcome=st.sampled_from(["paid", "refused"]), index=st.integers(0, 9))
    def payments_answers(self, outcome: str, index: int) -> None:
        if outcome == "paid":
            self._try(lambda: self.order.record_charge(self.payment_id, self.now))
        else:
            self._try(lambda: self.order.charge_refused(self.now))

    @rule(index=st.integers(0, 9))
    def charge_never_sent(self, index: int) -> None:
        self._try(lambda: self.order.charge_not_taken(self.token(index)))

    @precondition(lambda self: self.order.schedule_pending)
    @rule()
    def kitchen_schedules(self) -> None:
        self._try(lambda: self.order.record_schedule(f"schedule-{self.order.id}", self.now))

    @rule(index=st.integers(0, 9))
    def kitchen_turns_down(self, index: int) -> None:
        self._try(lambda: self.order.schedule_not_taken(self.token(index)))

    @rule(index=st.integers(0, 9))
    def holder_cancels(self, index: int) -> None:
        self._try(lambda: self.order.cancel(self.token(index), self.now))

    @precondition(lambda self: self.order.refund is RefundStatus.OWED)
    @rule(refused=st.booleans())
    def payments_refunds(self, refused: bool) -> None:
        if refused:
            self._try(self.order.refund_refused)
        else:
            self._try(lambda: self.order.record_refund(uuid4(), self.now))

    @rule(action=st.sampled_from([Action.DISPATCH, Action.DELIVER]))
    def kitchen_or_delivery_reports(self, action: Action) -> None:
        self._try(lambda: self.order.advance(action, self.now))

    @invariant()
    def events_count_the_versions(self) -> None:
        assert [event.sequence for event in self.events] == list(range(1, self.order.version + 1))

    @invariant()
    def money_and_kitchen_are_accounted_for(self) -> None:
        order = self.order
        if order.status in (OrderStatus.PROGRESS, OrderStatus.DISPATCHED, OrderStatus.DELIVERED):
            assert order.payment_id is not None
            assert order.schedule_id is not None
        if order.status is OrderStatus.PAID:
            assert order.payment_id is not None
        if order.refund is not None:
            assert order.status is OrderStatus.CANCELLED
            assert order.payment_id is not None
        if order.status is OrderStatus.CANCELLED and order.payment_id is not None:
            assert order.refund is not None
        if order.charge_pending:
            assert order.status is OrderStatus.CREATED
        if order.schedule_pending:
            assert order.status is OrderStatus.PAID

    @invariant()
    def nothing_pending_is_forgotten(self) -> None:
        order = self.order
        assert (order.pending_since is None) == (not order.pending)
        if order.pending:
            assert order.due is not None
        if order.claim is not None:
            assert order.due == order.claim.expires


test_one_order_keeps_its_invariants = OneOrder.TestCase
test_one_order_keeps_its_invariants.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
