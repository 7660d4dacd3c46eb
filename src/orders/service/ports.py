"""What the service layer needs from the outside world, as Protocols, and how those fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

from orders.domain import Order, OrderItem, OrderView, Pending


class OrderRepository(Protocol):
    """Orders of one transaction, loaded whole and saved whole. The order decides what
    changes; the repository stores it, with the events it recorded (transactional outbox)."""

    async def get(self, order_id: UUID, owner: str, *, for_update: bool = False) -> Order | None:
        """The caller's order; with `for_update`, locked until the transaction ends."""
        ...

    async def find(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        """The order whoever owns it (for news from kitchen and delivery, which name no owner)."""
        ...

    async def add(self, order: Order) -> None: ...

    async def save(self, order: Order) -> None: ...

    async def delete(self, order: Order) -> None: ...

    async def due(self, now: datetime, limit: int) -> list[Order]:
        """Up to `limit` orders whose `due` time has come, locked, skipping any another
        transaction holds (so that several workers share the work without overlap)."""
        ...


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A caller's `Idempotency-Key` and the fingerprint of the request that came with it."""

    owner: str
    key: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What is replayed for a key: the first answer's status, body and headers."""

    status: int
    body: bytes
    location: str | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A live key as stored: its request's fingerprint, and its answer once there is one."""

    fingerprint: bytes
    answer: StoredAnswer | None


class KeyRepository(Protocol):
    """Idempotency keys inside a unit of work: stored with the change they answer for."""

    async def add(
        self, key: RequestKey, answer: StoredAnswer, now: datetime, expires: datetime
    ) -> KeyRecord | None:
        """Store the key with its answer, waiting for a transaction that holds the same key;
        return the live record that stands in the way instead, if any."""
        ...


class IdempotencyKeys(Protocol):
    """Idempotency keys outside any transaction, for requests that call out while running."""

    async def begin(
        self, key: RequestKey, token: UUID, now: datetime, locked_until: datetime, expires: datetime
    ) -> KeyRecord | None:
        """Hold the key with `token` until `locked_until`; return the live record in the way
        instead, if any (one held by a request whose lease has run out is taken over)."""
        ...

    async def finish(self, key: RequestKey, token: UUID, answer: StoredAnswer) -> None:
        """Store the answer, if `token` still holds the key."""
        ...

    async def release(self, key: RequestKey, token: UUID) -> None:
        """Forget the key, if `token` still holds it, so that a retry runs afresh."""
        ...

    async def purge(self, now: datetime, limit: int) -> int:
        """Delete up to `limit` expired keys; return how many."""
        ...


class Inbox(Protocol):
    """Ids of the messages handled so far, kept in the transaction that handles them."""

    async def add(self, message_id: str) -> bool:
        """Record `message_id`; False when it was recorded already (a duplicate). Waits for
        a transaction handling the same message at the same time to end first."""
        ...


class UnitOfWork(Protocol):
    """One database transaction: nothing is kept unless `commit` is awaited."""

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def keys(self) -> KeyRepository: ...

    @property
    def inbox(self) -> Inbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PendingCount:
    """How many orders have an outcome of this kind pending, and since when the oldest."""

    pending: Pending
    count: int
    oldest: datetime | None


class OrderViews(Protocol):
    """Read-only queries, each a single statement outside any explicit transaction."""

    async def get(self, order_id: UUID, owner: str) -> OrderView | None: ...

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        cancelled: bool | None = None,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[OrderView]:
        """Up to `limit` of the owner's orders, newest first (ties by id, descending), only
        those before the (created, id) position `after` when given."""
        ...

    async def pending(self) -> Sequence[PendingCount]:
        """Pending outcomes of every kind, across all owners (for operators)."""
        ...


class Payments(Protocol):
    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        """Charge the order and return the payment id. Repeating a call with the same key
        must not charge again.

        Raises PaymentRefused, or a CollaboratorError.
        """
        ...

    async def refund(self, payment_id: UUID, idempotency_key: str) -> UUID:
        """Give a payment back and return the refund id; repeating the key refunds once.

        Raises RefundRefused, or a CollaboratorError.
        """
        ...


class Kitchen(Protocol):
    async def schedule(self, order_id: UUID, items: Sequence[OrderItem]) -> str:
        """Ask the kitchen to make the order; return the schedule id. The order id is the
        idempotency key: asking again finds the same schedule."""
        ...

    async def cancel(self, schedule_id: str) -> None:
        """Take the schedule off the kitchen's list (idempotent)."""
        ...


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


class RefundRefused(ServiceError):
    """Payments answered that it will not refund this payment."""

    def __init__(self, payment_id: UUID, reason: str) -> None:
        super().__init__(f"refund of payment {payment_id} was refused ({reason})")
        self.payment_id = payment_id
        self.reason = reason


class CollaboratorError(ServiceError):
    """A call to payments or kitchen failed; `service` names which one.

    `unknown_outcome` is False only when the request surely never took effect: it was never
    sent, or the other side rejected it outright (400, 401, 403, 404, 422). Otherwise (a
    timeout after sending, 5xx, 409, 425, 429, an unreadable answer) it may have.
    """

    def __init__(self, service: str, reason: str, *, unknown_outcome: bool = True) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.unknown_outcome = unknown_outcome


class CollaboratorBadAnswer(CollaboratorError):
    """It answered, but not with what the contract promises (5xx, refusal, bad body)."""


class CollaboratorUnavailable(CollaboratorError):
    """It could not be reached (connection refused, DNS, network)."""


class CollaboratorTimeout(CollaboratorError):
    """It did not answer in time (a read timeout, or the call's overall deadline)."""
