"""The orders domain: plain Python, no IO, no frameworks."""

from orders.domain.errors import (
    ActionInProgress,
    DomainError,
    InvalidTransition,
    OrderNotFound,
    OutcomePending,
    VersionMismatch,
)
from orders.domain.model import (
    ALLOWED_FROM,
    Action,
    Claim,
    EventType,
    Order,
    OrderEvent,
    OrderItem,
    OrderStatus,
    OrderView,
    Pending,
    RefundStatus,
    Size,
)

__all__ = [
    "ALLOWED_FROM",
    "Action",
    "ActionInProgress",
    "Claim",
    "DomainError",
    "EventType",
    "InvalidTransition",
    "Order",
    "OrderEvent",
    "OrderItem",
    "OrderNotFound",
    "OrderStatus",
    "OrderView",
    "OutcomePending",
    "Pending",
    "RefundStatus",
    "Size",
    "VersionMismatch",
]
