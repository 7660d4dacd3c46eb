"""Kitchen's and delivery's news, without IO: parsing, and applying it once per message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from orders.domain import (
    Action,
    EventType,
    InvalidTransition,
    Order,
    OrderItem,
    OrderNotFound,
    OrderStatus,
    Size,
)
from orders.service.status import (
    MalformedMessage,
    NewsTooEarly,
    Outcome,
    StatusNews,
    StatusService,
    read_news,
)
from tests.unit.test_service import FakeStore, FakeUnitOfWork

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def service(store: FakeStore) -> StatusService:
    return StatusService(lambda: FakeUnitOfWork(store), clock=lambda: NOW)


def order_in(store: FakeStore, status: OrderStatus) -> Order:
    order = Order.place(uuid4(), "alice", (OrderItem("latte", Size.BIG),), NOW)
    order.status = status
    order.events.clear()
    store.orders[order.id] = order
    return order


def test_read_news() -> None:
    order_id = uuid4()
    body = json.dumps({"schedule_id": "s-1", "order_id": str(order_id)}).encode()
    assert read_news("kitchen", "schedule.dispatched", body) == StatusNews(
        Action.DISPATCH, order_id
    )
    body = json.dumps({"order_id": str(order_id)}).encode()
    assert read_news("delivery", "order.delivered", body) == StatusNews(Action.DELIVER, order_id)


@pytest.mark.parametrize(
    ("exchange", "key", "body", "reason"),
    [
        ("kitchen", "order.delivered", b"{}", "unexpected message"),
        ("delivery", "order.delivered", b"\xff", "not JSON"),
        ("delivery", "order.delivered", b"[1]", "not a JSON object"),
        ("delivery", "order.delivered", b"{}", "order_id is missing"),
        ("delivery", "order.delivered", b'{"order_id": "x"}', "not a UUID"),
        (
            "kitchen",
            "schedule.dispatched",
            b'{"order_id": "%s"}' % str(uuid4()).encode(),
            "schedule_id",
        ),
    ],
)
def test_malformed_news_is_refused(exchange: str, key: str, body: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        read_news(exchange, key, body)


async def test_news_applies_once_per_message() -> None:
    store = FakeStore()
    order = order_in(store, OrderStatus.PROGRESS)
    status = service(store)
    news = StatusNews(Action.DISPATCH, order.id)
    assert await status.apply("m1", news) is Outcome.APPLIED
    assert await status.apply("m1", news) is Outcome.DUPLICATE
    assert await status.apply("m2", news) is Outcome.UNCHANGED
    assert store.orders[order.id].status is OrderStatus.DISPATCHED
    assert [event.type for event in store.outbox] == [EventType.DISPATCHED]
    assert store.inbox == {"m1", "m2"}


async def test_refused_news_records_nothing() -> None:
    store = FakeStore()
    cancelled = order_in(store, OrderStatus.CANCELLED)
    cooking = order_in(store, OrderStatus.PROGRESS)
    status = service(store)
    with pytest.raises(InvalidTransition):
        await status.apply("m1", StatusNews(Action.DISPATCH, cancelled.id))
    with pytest.raises(OrderNotFound):
        await status.apply("m2", StatusNews(Action.DISPATCH, uuid4()))
    with pytest.raises(NewsTooEarly):
        await status.apply("m3", StatusNews(Action.DELIVER, cooking.id))
    assert store.inbox == set()
    assert store.outbox == []
