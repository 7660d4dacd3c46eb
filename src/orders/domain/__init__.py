"""The orders domain: plain Python, no IO, no frameworks."""

from orders.domain.errors import (
    ActionInProgress,
    DomainError,
    InvalidTransition,
    OrderNotFound,
    PaymentOutcomeUnknown,
)
from orders.domain.model import ALLOWED_FROM, Action, Order, OrderItem, OrderStatus, Size

__all__ = [
    "ALLOWED_FROM",
    "Action",
    "ActionInProgress",
    "DomainError",
    "InvalidTransition",
    "Order",
    "OrderItem",
    "OrderNotFound",
    "OrderStatus",
    "PaymentOutcomeUnknown",
    "Size",
]
