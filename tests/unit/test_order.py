"""The order aggregate's lifecycle, with no IO: every transition, claims and their leases,
pending outcomes, refunds and events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from orders.domain import (
    ALLOWED_FROM,
    Action,
    ActionInProgress,
    EventType,
    InvalidTransition,
    Order,
    OrderItem,
    OrderStatus,
    OutcomePending,
    Pending,
    RefundStatus,
    Size,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
LATTE = (OrderItem("latte", Size.BIG, 2),)
MOCHA = (OrderItem("mocha", Size.SMALL),)


ALREADY = {Action.DISPATCH: OrderStatus.DISPATCHED, Action.DELIVER: OrderStatus.DELIVERED}


def placed(status: OrderStatus = OrderStatus.CREATED, **state: object) -> Order:
    order = Order.place(uuid4(), "alice", LATTE, T0)
    order.status = status
    for name, value in state.items():
        setattr(order, name, value)
    order.events.clear()
    return order


def paid() -> Order:
    return placed(OrderStatus.PAID, payment_id=uuid4())


def attempt(order: Order, action: Action, now: datetime = T0) -> None:
    """Try `action` the way the service would start it."""
    if action is Action.UPDATE:
        order.replace_items(MOCHA, now)
    elif action is Action.DELETE:
        order.delete(now)
    elif action in (Action.PAY, Action.CANCEL):
        order.take(action, uuid4(), now, LEASE)
    else:
        order.advance(action, now)


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("action", list(Action))
def test_every_action_follows_the_transition_table(status: OrderStatus, action: Action) -> None:
    order = placed(status)
    if ALREADY.get(action) is status:
        # News from kitchen or delivery heard again: nothing changes.
        assert order.advance(action, T0) is False
        assert order.events == []
    elif status in ALLOWED_FROM[action]:
        attempt(order, action)
    else:
        with pytest.raises(InvalidTransition) as refused:
            attempt(order, action)
        assert (refused.value.status, refused.value.action) == (status, action)
        assert order.status is status
        assert order.events == []


def test_placing_records_the_first_event() -> None:
    order = Order.place(uuid4(), "alice", LATTE, T0)

    [event] = order.events
    assert (event.type, event.sequence, event.occurred) == (EventType.PLACED, 1, T0)
    assert event.order == order.view()
    assert order.version == 1


def test_an_order_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        Order.place(uuid4(), "alice", (), T0)


def test_events_count_up_and_a_deleted_order_has_no_body() -> None:
    order = Order.place(uuid4(), "alice", LATTE, T0)
    order.replace_items(MOCHA, T0)
    order.delete(T0)

    assert [(event.type, event.sequence) for event in order.events] == [
        (EventType.PLACED, 1),
        (EventType.UPDATED, 2),
        (EventType.DELETED, 3),
    ]
    assert order.events[1].order is not None
    assert order.events[1].order.items == MOCHA
    assert order.events[2].order is None


def test_a_live_claim_refuses_everything_until_it_expires() -> None:
    order = placed()
    order.take(Action.PAY, uuid4(), T0, LEASE)
    order.charge_pending = False  # even with nothing pending, the claim alone refuses

    for action in (Action.UPDATE, Action.DELETE, Action.PAY, Action.CANCEL):
        with pytest.raises(ActionInProgress):
            attempt(order, action, T0 + LEASE - timedelta(seconds=1))
    attempt(order, Action.UPDATE, T0 + LEASE)


def test_paying_from_created_marks_the_charge_pending_under_a_claim() -> None:
    order = placed()
    token = uuid4()

    order.take(Action.PAY, token, T0, LEASE)

    assert order.holds(token)
    assert not order.holds(uuid4())
    assert order.pending == {Pending.CHARGE}
    assert order.pending_since == T0
    assert order.due == T0 + LEASE
    assert order.charge_key == f"{order.id}:0"


@pytest.mark.parametrize("action", [Action.UPDATE, Action.DELETE, Action.CANCEL])
def test_a_pending_charge_allows_only_paying_again(action: Action) -> None:
    order = placed(charge_pending=True)

    with pytest.raises(OutcomePending) as refused:
        attempt(order, action)
    assert refused.value.pending is Pending.CHARGE
    attempt(order, Action.PAY)


def test_a_charge_then_a_schedule_bring_the_order_to_progress() -> None:
    order = placed()
    token = uuid4()
    payment_id = uuid4()
    order.take(Action.PAY, token, T0, LEASE)

    order.record_charge(payment_id, T0)
    assert (order.status, order.payment_id) == (OrderStatus.PAID, payment_id)
    assert order.pending == {Pending.SCHEDULE}
    order.record_schedule("s-1", T0)
    order.release(token, T0)

    assert (order.status, order.schedule_id) == (OrderStatus.PROGRESS, "s-1")
    assert order.pending == frozenset()
    assert order.pending_since is None
    assert order.claim is None
    assert order.due is None
    assert [event.type for event in order.events] == [EventType.PAID, EventType.SCHEDULED]


def test_recording_the_same_charge_or_schedule_twice_changes_nothing() -> None:
    order = placed()
    payment_id = uuid4()
    order.take(Action.PAY, uuid4(), T0, LEASE)
    order.record_charge(payment_id, T0)
    order.record_charge(payment_id, T0)
    order.record_schedule("s-1", T0)
    order.record_schedule("s-1", T0)

    assert [event.type for event in order.events] == [EventType.PAID, EventType.SCHEDULED]


def test_a_refused_charge_moves_on_to_the_next_attempt() -> None:
    order = placed()
    token = uuid4()
    order.take(Action.PAY, token, T0, LEASE)

    order.charge_refused(T0)
    order.release(token, T0)

    assert order.status is OrderStatus.CREATED
    assert order.pending == frozenset()
    assert order.due is None
    assert order.charge_key == f"{order.id}:1"
    attempt(order, Action.UPDATE)


def test_only_the_sender_may_say_a_charge_never_took_effect() -> None:
    order = placed()
    first, second = uuid4(), uuid4()
    order.take(Action.PAY, first, T0, LEASE)
    # The first request's lease ran out; a second took over and sent the charge again.
    order.take(Action.PAY, second, T0 + LEASE, LEASE)

    order.charge_not_taken(first)
    assert order.charge_pending

    order.charge_not_taken(second)
    assert not order.charge_pending


def test_an_unknown_outcome_is_tried_again_with_a_growing_back_off() -> None:
    order = placed()
    token = uuid4()
    order.take(Action.PAY, token, T0, LEASE)

    order.release(token, T0, retry_in=timedelta(seconds=4))

    assert order.claim is None
    assert order.charge_pending
    assert order.due == T0 + timedelta(seconds=4)
    assert order.retries == 1


def test_a_charge_recorded_after_a_takeover_leaves_the_schedule_to_the_new_holder() -> None:
    order = placed()
    first, second = uuid4(), uuid4()
    order.take(Action.PAY, first, T0, LEASE)
    order.take(Action.PAY, second, T0 + LEASE, LEASE)

    order.record_charge(uuid4(), T0 + LEASE)

    assert order.holds(second)
    assert order.pending == {Pending.SCHEDULE}


def test_a_charge_recorded_with_nobody_holding_the_order_is_due_at_once() -> None:
    """The takeover dead end: a late charge must still lead to a schedule."""
    order = placed()
    first, second = uuid4(), uuid4()
    order.take(Action.PAY, first, T0, LEASE)
    order.take(Action.PAY, second, T0 + LEASE, LEASE)
    order.release(second, T0 + LEASE)
    later = T0 + 2 * LEASE

    order.record_charge(uuid4(), later)

    assert order.pending == {Pending.SCHEDULE}
    assert order.due is not None
    assert order.due <= later
    assert order.resume(uuid4(), later, LEASE) is Action.PAY


def test_resume_takes_over_expired_claims_and_pending_outcomes_only() -> None:
    idle = placed()
    assert idle.resume(uuid4(), T0, LEASE) is None

    claimed = placed()
    claimed.take(Action.CANCEL, uuid4(), T0, LEASE)
    assert claimed.resume(uuid4(), T0 + LEASE / 2, LEASE) is None
    token = uuid4()
    assert claimed.resume(token, T0 + LEASE, LEASE) is Action.CANCEL
    assert claimed.holds(token)

    owed = placed(OrderStatus.CANCELLED, payment_id=uuid4(), refund=RefundStatus.OWED)
    assert owed.resume(uuid4(), T0, LEASE) is Action.CANCEL


def test_resuming_a_pay_from_created_repeats_the_charge() -> None:
    """Its holder died: it may have sent the charge, even if nothing says so."""
    order = placed()
    order.take(Action.PAY, uuid4(), T0, LEASE)
    order.charge_pending = False

    assert order.resume(uuid4(), T0 + LEASE, LEASE) is Action.PAY
    assert order.charge_pending


def test_paying_from_paid_schedules_only() -> None:
    order = paid()
    order.take(Action.PAY, uuid4(), T0, LEASE)

    assert order.pending == {Pending.SCHEDULE}
    assert not order.charge_pending


def test_a_schedule_turned_down_leaves_the_order_paid() -> None:
    order = paid()
    token = uuid4()
    order.take(Action.PAY, token, T0, LEASE)

    order.schedule_not_taken(token)
    order.release(token, T0)

    assert order.status is OrderStatus.PAID
    assert order.pending == frozenset()


def test_cancelling_an_uncharged_order_owes_nothing() -> None:
    order = placed()
    token = uuid4()
    order.take(Action.CANCEL, token, T0, LEASE)

    order.cancel(token, T0)

    assert order.status is OrderStatus.CANCELLED
    assert order.refund is None
    assert order.claim is None
    assert order.due is None
    assert [event.type for event in order.events] == [EventType.CANCELLED]


def test_cancelling_a_charged_order_owes_its_refund_until_confirmed() -> None:
    order = paid()
    token = uuid4()
    order.take(Action.CANCEL, token, T0, LEASE)

    order.cancel(token, T0)
    assert (order.status, order.refund) == (OrderStatus.CANCELLED, RefundStatus.OWED)
    assert order.holds(token)
    assert order.pending == {Pending.REFUND}
    with pytest.raises(OutcomePending):
        order.delete(T0 + LEASE)

    refund_id = uuid4()
    order.record_refund(refund_id, T0)
    order.release(token, T0)
    assert (order.refund, order.refund_id) == (RefundStatus.REFUNDED, refund_id)
    assert order.pending == frozenset()
    assert order.due is None
    assert [event.type for event in order.events] == [EventType.CANCELLED, EventType.REFUNDED]
    order.delete(T0)


def test_a_refused_refund_never_reverts_the_cancellation() -> None:
    order = paid()
    token = uuid4()
    order.take(Action.CANCEL, token, T0, LEASE)
    order.cancel(token, T0)

    order.refund_refused()

    assert (order.status, order.refund) == (OrderStatus.CANCELLED, RefundStatus.REFUSED)
    assert order.pending == frozenset()


def test_cancel_needs_its_own_claim_and_the_kitchen_settled() -> None:
    order = paid()
    pay_token = uuid4()
    order.take(Action.PAY, pay_token, T0, LEASE)
    with pytest.raises(ActionInProgress):
        order.cancel(pay_token, T0)

    other = paid()
    token = uuid4()
    other.take(Action.CANCEL, token, T0, LEASE)
    other.schedule_pending = True
    with pytest.raises(OutcomePending) as refused:
        other.cancel(token, T0)
    assert refused.value.pending is Pending.SCHEDULE


def test_dispatch_and_delivery_move_on_once() -> None:
    order = placed(OrderStatus.PROGRESS)

    assert order.advance(Action.DISPATCH, T0) is True
    assert order.advance(Action.DISPATCH, T0) is False
    with pytest.raises(InvalidTransition):
        placed(OrderStatus.PROGRESS).advance(Action.DELIVER, T0)
    assert order.advance(Action.DELIVER, T0) is True
    assert [event.type for event in order.events] == [
        EventType.DISPATCHED,
        EventType.DELIVERED,
    ]


def test_only_pay_and_cancel_take_claims() -> None:
    with pytest.raises(ValueError, match="needs no claim"):
        placed().take(Action.UPDATE, uuid4(), T0, LEASE)


def test_views_carry_the_version() -> None:
    order = Order.place(UUID(int=1), "alice", LATTE, T0)
    order.replace_items(MOCHA, T0)

    assert order.view().version == 2
    assert order.view().items == MOCHA
