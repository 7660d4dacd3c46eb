"""Orders, their items, and the state machine that says what may happen to an order when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from uuid import UUID

from orders.domain.errors import InvalidTransition, PaymentOutcomeUnknown

MAX_QUANTITY: Final = 1_000_000


class Size(StrEnum):
    SMALL = "small"
    MEDIUM = "medium"
    BIG = "big"


class OrderStatus(StrEnum):
    CREATED = "created"
    PAID = "paid"
    PROGRESS = "progress"
    CANCELLED = "cancelled"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"


class Action(StrEnum):
    """What a customer can do to an existing order."""

    UPDATE = "update"
    DELETE = "delete"
    PAY = "pay"
    CANCEL = "cancel"


# The whole customer-facing state machine (DESIGN §2): anything not listed is refused.
ALLOWED_FROM: Final[dict[Action, frozenset[OrderStatus]]] = {
    Action.UPDATE: frozenset({OrderStatus.CREATED}),
    Action.DELETE: frozenset({OrderStatus.CREATED, OrderStatus.CANCELLED}),
    # From `paid`, an earlier kitchen call failed after the charge: schedule only.
    Action.PAY: frozenset({OrderStatus.CREATED, OrderStatus.PAID}),
    Action.CANCEL: frozenset({OrderStatus.CREATED, OrderStatus.PAID, OrderStatus.PROGRESS}),
}


@dataclass(frozen=True, slots=True)
class OrderItem:
    product: str
    size: Size
    quantity: int = 1

    def __post_init__(self) -> None:
        if not self.product:
            raise ValueError("product must not be empty")
        if not 1 <= self.quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be between 1 and {MAX_QUANTITY}")


@dataclass(frozen=True, slots=True)
class Order:
    id: UUID
    owner: str
    created: datetime
    status: OrderStatus
    items: tuple[OrderItem, ...]
    payment_id: UUID | None = None
    schedule_id: str | None = None
    # Bumped each time payments refuses a charge, so a new attempt is a new idempotent request.
    charge_attempt: int = 0
    # A charge was asked for and its outcome is not known (a timeout, a 5xx): the customer may
    # have paid, so nothing but paying again (which settles the outcome) is allowed.
    charge_pending: bool = False

    def allows(self, action: Action) -> bool:
        if self.charge_pending and action is not Action.PAY:
            return False
        return self.status in ALLOWED_FROM[action]

    def check(self, action: Action) -> None:
        """Raise a domain error unless `action` is allowed now."""
        if self.status not in ALLOWED_FROM[action]:
            raise InvalidTransition(self.id, self.status, action)
        if self.charge_pending and action is not Action.PAY:
            raise PaymentOutcomeUnknown(self.id, action)

    @property
    def charge_key(self) -> str:
        """Idempotency key of the current charge attempt: a retry after an unknown outcome
        (timeout, crash) repeats it; a refused charge moves on to the next one."""
        return f"{self.id}:{self.charge_attempt}"

    @property
    def needs_charge(self) -> bool:
        """Whether paying still has to charge (from `paid`, only scheduling is left)."""
        return self.status is OrderStatus.CREATED
