"""Errors of the orders domain. They carry data; mapping them to HTTP is the web layer's job."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar
from uuid import UUID

if TYPE_CHECKING:
    from orders.domain.model import Action, OrderStatus, Pending


class DomainError(Exception):
    """Base of every error the domain and service layer raise on purpose."""


class OrderNotFound(DomainError):
    """No order with this id belongs to the caller (whether or not it exists for others)."""

    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id


class InvalidTransition(DomainError):
    """The action is not allowed in the order's current status."""

    def __init__(self, order_id: UUID, status: OrderStatus, action: Action) -> None:
        super().__init__(f"cannot {action} an order in status {status.value!r}")
        self.order_id = order_id
        self.status = status
        self.action = action


class OutcomePending(DomainError):
    """The outcome of a call about this order (a charge, a schedule, a refund) is not known
    yet; the service settles it in the background, after which the action may be allowed."""

    _WHAT: ClassVar[dict[str, str]] = {
        "charge": "the outcome of its payment is not known yet",
        "schedule": "the outcome of its kitchen schedule is not known yet",
        "refund": "its refund is still being settled",
    }

    def __init__(self, order_id: UUID, action: Action, pending: Pending) -> None:
        super().__init__(
            f"cannot {action} this order: {self._WHAT[pending.value]}; try again shortly"
        )
        self.order_id = order_id
        self.action = action
        self.pending = pending


class ActionInProgress(DomainError):
    """Another pay or cancel of this order is still running."""

    def __init__(self, order_id: UUID, action: Action) -> None:
        super().__init__(f"cannot {action} this order while another payment or cancellation runs")
        self.order_id = order_id
        self.action = action


class VersionMismatch(DomainError):
    """The caller asked to change the order only as it last saw it, and it has changed since."""

    def __init__(self, order_id: UUID, version: int) -> None:
        super().__init__(f"order {order_id} has changed (it is at version {version})")
        self.order_id = order_id
        self.version = version
