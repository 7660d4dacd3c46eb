"""What the service layer needs from the outside world, as Protocols, and how those fail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

from orders.domain import Action, Order, OrderItem, OrderStatus


class OrderRepository(Protocol):
    """Orders of one transaction. Every method is scoped to an owner or a claim token.

    Guarded writes take the statuses they are allowed from and return None when the order is
    missing, in another status, or claimed by a pay/cancel in flight.
    """

    async def add(self, order: Order) -> None: ...

    async def get(self, order_id: UUID, owner: str) -> Order | None: ...

    async def replace_items(
        self,
        order_id: UUID,
        owner: str,
        items: Sequence[OrderItem],
        allowed: frozenset[OrderStatus],
    ) -> Order | None: ...

    async def delete(self, order_id: UUID, owner: str, allowed: frozenset[OrderStatus]) -> bool: ...

    async def claim(
        self,
        order_id: UUID,
        owner: str,
        action: Action,
        allowed: frozenset[OrderStatus],
        token: UUID,
        lease: timedelta,
    ) -> Order | None:
        """Mark the order as busy with `action` for `lease`, unless another claim is live.

        Claiming a `created` order to pay also marks its charge as pending: until the
        outcome is known, only paying again is allowed.
        """
        ...

    async def record_payment(self, order_id: UUID, token: UUID, payment_id: UUID) -> bool:
        """Store a successful charge (status `paid`), whoever holds the order now, and say
        whether the claim `token` still holds it."""
        ...

    async def settle(
        self,
        order_id: UUID,
        token: UUID,
        status: OrderStatus,
        schedule_id: str | None = None,
    ) -> Order | None:
        """Move a claimed order to `status` and release the claim."""
        ...

    async def release(
        self, order_id: UUID, token: UUID, *, refused: bool = False, uncharged: bool = False
    ) -> None:
        """Drop the claim without changing the status. `refused`: payments said no, so the
        next pay is a new charge attempt. `uncharged`: the charge request never reached
        payments. Either way the charge is no longer pending."""
        ...


class UnitOfWork(Protocol):
    """One database transaction: nothing is kept unless `commit` is awaited."""

    @property
    def orders(self) -> OrderRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class OrderViews(Protocol):
    """Read-only queries, each a single statement outside any explicit transaction."""

    async def get(self, order_id: UUID, owner: str) -> Order | None: ...

    async def list(
        self, owner: str, *, cancelled: bool | None = None, limit: int | None = None
    ) -> list[Order]: ...


class Payments(Protocol):
    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        """Charge the order and return the payment id. Repeating a call with the same key
        must not charge again.

        Raises PaymentRefused, or a CollaboratorError when the outcome is unknown.
        """
        ...


class Kitchen(Protocol):
    async def schedule(self, order: Order) -> str:
        """Ask the kitchen to make the order; return the schedule id."""
        ...

    async def cancel(self, schedule_id: str) -> None: ...


# Errors the adapters raise through the ports. Like domain errors, they carry data only.


class ServiceError(Exception):
    """Base of errors raised through the ports."""


class StorageUnavailable(ServiceError):
    """The database cannot be reached or did not answer in time."""


class PaymentRefused(ServiceError):
    """Payments answered that the charge is invalid: nothing was charged."""

    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"payment for order {order_id} was refused")
        self.order_id = order_id


class CollaboratorError(ServiceError):
    """A call to payments or kitchen failed; `service` names which one. `delivered` is False
    only when the request certainly did not take effect (it was never sent, or it was
    turned down), so that a charge is known not to have happened."""

    def __init__(self, service: str, reason: str, *, delivered: bool = True) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.delivered = delivered


class CollaboratorBadAnswer(CollaboratorError):
    """It answered, but not with what the contract promises (5xx, refusal, bad body)."""


class CollaboratorUnavailable(CollaboratorError):
    """It could not be reached (connection refused, DNS, network)."""


class CollaboratorTimeout(CollaboratorError):
    """It did not answer in time; the outcome of the call is unknown."""
