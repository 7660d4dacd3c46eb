"""The order aggregate: its items, its lifecycle, what is in flight and what is pending.

Every rule about what may happen to an order, and when, lives here as a pure method: no IO,
no clock (callers pass `now`). The service layer loads an order, asks it to change, saves
it, and carries out the calls to payments and kitchen that the order says are owed.

Two ideas carry the lifecycle:

- **A claim** (action, token, expiry) says that one request, or the background reconciler,
  is working on the order while it calls payments or the kitchen. Others are refused until
  it is released or has expired; an expired claim may be taken over.
- **Pending outcomes** say which calls may have taken effect without us knowing: a charge, a
  schedule, a refund. A pending call is repeated with the same idempotency key until its
  outcome is known, so it never takes effect twice.

Each change records an `OrderEvent`; `version` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from uuid import UUID, uuid4

from orders.domain.errors import (
    ActionInProgress,
    InvalidTransition,
    OutcomePending,
    VersionMismatch,
)

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
    """What may happen to an existing order: a customer's actions, then kitchen's and
    delivery's news."""

    UPDATE = "update"
    DELETE = "delete"
    PAY = "pay"
    CANCEL = "cancel"
    DISPATCH = "dispatch"
    DELIVER = "deliver"


# The whole state machine (docs/api.md, "Order lifecycle"): anything not listed is refused.
ALLOWED_FROM: Final[dict[Action, frozenset[OrderStatus]]] = {
    Action.UPDATE: frozenset({OrderStatus.CREATED}),
    Action.DELETE: frozenset({OrderStatus.CREATED, OrderStatus.CANCELLED}),
    # From `paid`, an earlier kitchen call failed after the charge: schedule only.
    Action.PAY: frozenset({OrderStatus.CREATED, OrderStatus.PAID}),
    Action.CANCEL: frozenset({OrderStatus.CREATED, OrderStatus.PAID, OrderStatus.PROGRESS}),
    Action.DISPATCH: frozenset({OrderStatus.PROGRESS}),
    Action.DELIVER: frozenset({OrderStatus.DISPATCHED}),
}

# Where each action leads.
_LEADS_TO: Final = {
    Action.DISPATCH: OrderStatus.DISPATCHED,
    Action.DELIVER: OrderStatus.DELIVERED,
}


class Pending(StrEnum):
    """A call whose outcome is not known yet."""

    CHARGE = "charge"
    SCHEDULE = "schedule"
    REFUND = "refund"


class RefundStatus(StrEnum):
    OWED = "owed"
    REFUNDED = "refunded"
    REFUSED = "refused"


class EventType(StrEnum):
    PLACED = "order.placed"
    UPDATED = "order.updated"
    PAID = "order.paid"
    SCHEDULED = "order.scheduled"
    CANCELLED = "order.cancelled"
    REFUNDED = "order.refunded"
    DISPATCHED = "order.dispatched"
    DELIVERED = "order.delivered"
    DELETED = "order.deleted"


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
class OrderView:
    """An order as its customer sees it."""

    id: UUID
    created: datetime
    status: OrderStatus
    items: tuple[OrderItem, ...]
    version: int


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """Something that happened to an order. `sequence` counts from 1 per order; `order` is
    the order right after the change, or None once it is deleted."""

    id: UUID
    type: EventType
    order_id: UUID
    sequence: int
    occurred: datetime
    order: OrderView | None


@dataclass(frozen=True, slots=True)
class Claim:
    """One request (or the reconciler) works on the order until `expires`."""

    action: Action
    token: UUID
    expires: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires


@dataclass(slots=True, eq=False)
class Order:
    id: UUID
    owner: str
    created: datetime
    status: OrderStatus
    items: tuple[OrderItem, ...]
    version: int = 0
    payment_id: UUID | None = None
    # Bumped each time payments refuses a charge, so a new attempt is a new idempotent request.
    charge_attempt: int = 0
    charge_pending: bool = False
    schedule_id: str | None = None
    schedule_pending: bool = False
    refund: RefundStatus | None = None
    refund_id: UUID | None = None
    claim: Claim | None = None
    pending_since: datetime | None = None
    # While something is pending and nobody holds the order: when to try again, and how often
    # the background has tried already (for its back-off).
    retry_at: datetime | None = None
    retries: int = 0
    events: list[OrderEvent] = field(default_factory=list)

    # Reading the state.

    @property
    def pending(self) -> frozenset[Pending]:
        pending = set()
        if self.charge_pending:
            pending.add(Pending.CHARGE)
        if self.schedule_pending:
            pending.add(Pending.SCHEDULE)
        if self.refund is RefundStatus.OWED:
            pending.add(Pending.REFUND)
        return frozenset(pending)

    @property
    def due(self) -> datetime | None:
        """When the background should look at this order: once its claim expires (its holder
        may have died), or when a pending outcome is to be tried again; None if never."""
        if self.claim is not None:
            return self.claim.expires
        if self.pending:
            return self.retry_at
        return None

    @property
    def charge_key(self) -> str:
        """Idempotency key of the current charge attempt: a retry after an unknown outcome
        repeats it; a refused charge moves on to the next one."""
        return f"{self.id}:{self.charge_attempt}"

    @property
    def refund_key(self) -> str:
        return f"{self.id}:refund"

    def holds(self, token: object) -> bool:
        """Whether the claim `token` still holds the order."""
        return self.claim is not None and self.claim.token == token

    def view(self) -> OrderView:
        return OrderView(self.id, self.created, self.status, self.items, self.version)

    def expect(self, versions: frozenset[int] | None) -> None:
        """Raise VersionMismatch unless the order is at one of `versions` (None: any): a
        client changes the order only as it last saw it."""
        if versions is not None and self.version not in versions:
            raise VersionMismatch(self.id, self.version)

    def check(self, action: Action, now: datetime) -> None:
        """Raise a domain error unless `action` is allowed now."""
        if self.status not in ALLOWED_FROM[action]:
            raise InvalidTransition(self.id, self.status, action)
        if self.claim is not None and self.claim.live(now):
            raise ActionInProgress(self.id, action)
        # Paying repeats a pending charge or schedule with its key; cancelling finds a pending
        # schedule again. Nothing else may happen while money's whereabouts are unknown.
        if self.charge_pending and action is not Action.PAY:
            raise OutcomePending(self.id, action, Pending.CHARGE)
        if self.refund is RefundStatus.OWED:
            raise OutcomePending(self.id, action, Pending.REFUND)

    # A customer's changes.

    @classmethod
    def place(
        cls, order_id: UUID, owner: str, items: tuple[OrderItem, ...], now: datetime
    ) -> Order:
        if not items:
            raise ValueError("an order needs at least one item")
        order = cls(id=order_id, owner=owner, created=now, status=OrderStatus.CREATED, items=items)
        order._record(EventType.PLACED, now)
        return order

    def replace_items(self, items: tuple[OrderItem, ...], now: datetime) -> None:
        self.check(Action.UPDATE, now)
        if not items:
            raise ValueError("an order needs at least one item")
        self.items = items
        self._record(EventType.UPDATED, now)

    def delete(self, now: datetime) -> None:
        """Check that the order may go; the repository then removes it."""
        self.check(Action.DELETE, now)
        self._record(EventType.DELETED, now)

    # Claims.

    def take(self, action: Action, token: UUID, now: datetime, lease: timedelta) -> None:
        """Claim the order for a customer's pay or cancel, which then calls out."""
        if action not in (Action.PAY, Action.CANCEL):
            raise ValueError(f"{action} needs no claim")
        self.check(action, now)
        self.claim = Claim(action, token, now + lease)
        if action is Action.PAY:
            # From `created` a charge is about to be asked for, from `paid` a schedule: each
            # is pending until its outcome is known.
            if self.status is OrderStatus.CREATED:
                self._pend(Pending.CHARGE, now)
            else:
                self._pend(Pending.SCHEDULE, now)

    def resume(self, token: UUID, now: datetime, lease: timedelta) -> Action | None:
        """Take over what was left unfinished (a pending outcome, or an expired claim whose
        holder is gone) to complete it; return what to complete, or None if nothing is."""
        if self.claim is not None and self.claim.live(now):
            return None
        if self.claim is not None:
            action = self.claim.action
        elif self.charge_pending or self.schedule_pending:
            action = Action.PAY
        elif self.refund is RefundStatus.OWED:
            action = Action.CANCEL
        else:
            return None
        if action is Action.PAY and self.status is OrderStatus.CREATED:
            # Its holder may have sent a charge before it died.
            self._pend(Pending.CHARGE, now)
        self.claim = Claim(action, token, now + lease)
        return action

    def release(self, token: UUID, now: datetime, *, retry_in: timedelta | None = None) -> None:
        """Drop the claim if `token` holds it. What is still pending is tried again in the
        background, at once or after `retry_in` (then counted as one more try)."""
        if not self.holds(token):
            return
        self.claim = None
        if retry_in is not None:
            self.retries += 1
            self.retry_at = now + retry_in
        else:
            self.retry_at = now

    # Outcomes of the calls to payments and kitchen.

    def record_charge(self, payment_id: UUID, now: datetime) -> None:
        """Payments charged the order. A fact, recorded whoever holds the order now; the
        schedule the customer asked for is owed from here on."""
        if self.payment_id == payment_id:
            return
        if self.status is not OrderStatus.CREATED:
            raise InvalidTransition(self.id, self.status, Action.PAY)
        self.status = OrderStatus.PAID
        self.payment_id = payment_id
        self.charge_pending = False
        self._pend(Pending.SCHEDULE, now)
        self._record(EventType.PAID, now)

    def charge_refused(self, now: datetime) -> None:
        """Payments refused the charge: nothing was charged, the next pay is a new attempt."""
        if self.charge_pending and self.status is OrderStatus.CREATED:
            self.charge_pending = False
            self.charge_attempt += 1
            self._settle()

    def charge_not_taken(self, token: UUID) -> None:
        """The charge request surely never took effect. Only its sender may say so: a request
        that took the order over since may have sent the same charge again."""
        if self.holds(token) and self.status is OrderStatus.CREATED:
            self.charge_pending = False
            self._settle()

    def record_schedule(self, schedule_id: str, now: datetime) -> None:
        """The kitchen scheduled the order: it is in progress."""
        if self.schedule_id == schedule_id:
            return
        if self.status is not OrderStatus.PAID:
            raise InvalidTransition(self.id, self.status, Action.PAY)
        self.schedule_id = schedule_id
        self.schedule_pending = False
        self.status = OrderStatus.PROGRESS
        self._settle()
        self._record(EventType.SCHEDULED, now)

    def schedule_not_taken(self, token: UUID) -> None:
        """The kitchen turned the schedule down outright: the order stays paid, and paying
        again asks once more."""
        if self.holds(token) and self.status is OrderStatus.PAID:
            self.schedule_pending = False
            self._settle()

    def cancel(self, token: UUID, now: datetime) -> None:
        """Cancel under a cancel claim, once the kitchen has nothing of it. A charged order
        owes its refund from here on; the claim stays for asking for it."""
        if not self.holds(token) or self.claim is None or self.claim.action is not Action.CANCEL:
            raise ActionInProgress(self.id, Action.CANCEL)
        if self.status not in ALLOWED_FROM[Action.CANCEL]:
            raise InvalidTransition(self.id, self.status, Action.CANCEL)
        if self.charge_pending:
            raise OutcomePending(self.id, Action.CANCEL, Pending.CHARGE)
        if self.schedule_pending:
            raise OutcomePending(self.id, Action.CANCEL, Pending.SCHEDULE)
        self.status = OrderStatus.CANCELLED
        self._record(EventType.CANCELLED, now)
        if self.payment_id is not None:
            self.refund = RefundStatus.OWED
            self._pend(Pending.REFUND, now)
        else:
            self.claim = None

    def record_refund(self, refund_id: UUID, now: datetime) -> None:
        """Payments gave the money back."""
        if self.refund is not RefundStatus.OWED:
            return
        self.refund = RefundStatus.REFUNDED
        self.refund_id = refund_id
        self._settle()
        self._record(EventType.REFUNDED, now)

    def refund_refused(self) -> None:
        """Payments will not refund. Operators must look; the cancellation stands."""
        if self.refund is RefundStatus.OWED:
            self.refund = RefundStatus.REFUSED
            self._settle()

    # News from kitchen and delivery.

    def advance(self, action: Action, now: datetime) -> bool:
        """Apply `dispatch` or `deliver`; False when it was applied already."""
        target = _LEADS_TO[action]
        if self.status is target:
            return False
        if self.status not in ALLOWED_FROM[action]:
            raise InvalidTransition(self.id, self.status, action)
        self.status = target
        self._record(
            EventType.DISPATCHED if action is Action.DISPATCH else EventType.DELIVERED, now
        )
        return True

    # Bookkeeping.

    def _pend(self, pending: Pending, now: datetime) -> None:
        if pending is Pending.CHARGE:
            self.charge_pending = True
        elif pending is Pending.SCHEDULE:
            self.schedule_pending = True
        if self.pending_since is None:
            self.pending_since = now
        if self.claim is None:
            self.retry_at = now

    def _settle(self) -> None:
        if not self.pending:
            self.pending_since = None
            self.retry_at = None
            self.retries = 0

    def _record(self, event_type: EventType, now: datetime) -> None:
        self.version += 1
        snapshot = None if event_type is EventType.DELETED else self.view()
        self.events.append(OrderEvent(uuid4(), event_type, self.id, self.version, now, snapshot))
