"""News from kitchen and delivery: an order left the kitchen, an order arrived (asyncapi.yaml).

`read_news` turns a message from the broker into `StatusNews` or refuses it as malformed;
`StatusService.apply` moves the order, once per message id: the id goes into the inbox in
the transaction that changes the order, so a message handled twice changes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from uuid import UUID

from orders.domain import Action, InvalidTransition, OrderNotFound, OrderStatus
from orders.service.ports import ServiceError, UnitOfWork

# (exchange, routing key) of each kind of news, and what it does to the order.
KITCHEN_DISPATCHED: Final = ("kitchen", "schedule.dispatched")
DELIVERY_DELIVERED: Final = ("delivery", "order.delivered")
_ACTIONS: Final = {KITCHEN_DISPATCHED: Action.DISPATCH, DELIVERY_DELIVERED: Action.DELIVER}


class NewsTooEarly(ServiceError):
    """Delivery says an order arrived that the kitchen has not dispatched yet: the two
    messages crossed. Worth another try shortly; refused for good if it stays so."""

    def __init__(self, news: StatusNews) -> None:
        super().__init__(f"order {news.order_id} is not dispatched yet")
        self.news = news


class MalformedMessage(ServiceError):
    """A message that no retry can make sense of: unknown kind, not JSON, wrong fields."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StatusNews:
    """What a status message says: `action` happened to the order."""

    action: Action
    order_id: UUID


class Outcome(StrEnum):
    APPLIED = "applied"
    # The order was there already (the news came another way, or twice under two ids).
    UNCHANGED = "unchanged"
    # This very message was handled before.
    DUPLICATE = "duplicate"


def read_news(exchange: str, routing_key: str, body: bytes) -> StatusNews:
    """Parse a status message; raise MalformedMessage when it is not one."""
    action = _ACTIONS.get((exchange, routing_key))
    if action is None:
        raise MalformedMessage(f"unexpected message: exchange {exchange!r} key {routing_key!r}")
    try:
        document = json.loads(body)
    except ValueError:
        raise MalformedMessage("the body is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedMessage("the body is not a JSON object")
    raw = document.get("order_id")
    if not isinstance(raw, str):
        raise MalformedMessage("order_id is missing or not a string")
    try:
        order_id = UUID(raw)
    except ValueError:
        raise MalformedMessage(f"order_id is not a UUID: {raw[:60]!r}") from None
    if action is Action.DISPATCH and not isinstance(document.get("schedule_id"), str):
        raise MalformedMessage("schedule_id is missing or not a string")
    return StatusNews(action, order_id)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StatusService:
    """Applies kitchen's and delivery's news to orders."""

    def __init__(
        self, unit_of_work: Callable[[], UnitOfWork], *, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock

    async def apply(self, message_id: str, news: StatusNews) -> Outcome:
        """Move the order as the news says, once for this `message_id`.

        Raises OrderNotFound, InvalidTransition (e.g. news of a cancelled order), NewsTooEarly
        (delivered before dispatched: try again later) or StorageUnavailable; then nothing is
        recorded, not even the id.
        """
        async with self._uow() as uow:
            if not await uow.inbox.add(message_id):
                return Outcome.DUPLICATE
            order = await uow.orders.find(news.order_id, for_update=True)
            if order is None:
                raise OrderNotFound(news.order_id)
            try:
                changed = order.advance(news.action, self._clock())
            except InvalidTransition:
                if news.action is Action.DELIVER and order.status is OrderStatus.PROGRESS:
                    raise NewsTooEarly(news) from None
                raise
            if changed:
                await uow.orders.save(order)
            await uow.commit()
        return Outcome.APPLIED if changed else Outcome.UNCHANGED
