"""The orders domain: plain Python, no IO, no frameworks."""

from orders.domain.errors import ActionInProgress, DomainError, InvalidTransition, OrderNotFound
from orders.domain.model import Action, Order, OrderItem, OrderStatus, Size

__all__ = [
    "Action",
    "ActionInProgress",
    "DomainError",
    "InvalidTransition",
    "Order",
    "OrderItem",
    "OrderNotFound",
    "OrderStatus",
    "Size",
]
