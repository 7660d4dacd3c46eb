"""The database schema, as typed SQLAlchemy models. Alembic migrations are checked against it.

The records are the schema's single source of truth; the repository queries their tables with
SQLAlchemy Core and maps rows to domain objects, so no record ever leaves this package.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orders.domain import Action, EventType, OrderStatus, RefundStatus, Size
from orders.domain.model import MAX_QUANTITY

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: Iterable[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrderRecord(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[str] = mapped_column(Text, server_default=OrderStatus.CREATED.value)
    # How many events the order has recorded: its version, and the last event's sequence.
    version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    payment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    charge_attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    charge_pending: Mapped[bool] = mapped_column(Boolean, server_default=false())
    schedule_id: Mapped[str | None] = mapped_column(Text)
    schedule_pending: Mapped[bool] = mapped_column(Boolean, server_default=false())
    refund: Mapped[str | None] = mapped_column(Text)
    refund_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    # A pay or cancel in flight holds the order until `action_expires` (see domain.model).
    action: Mapped[str | None] = mapped_column(Text)
    action_token: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    action_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the reconciler should look at the order (Order.due); NULL for nearly every order,
    # so its partial index stays tiny and an idle reconciler's query reads nothing.
    due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retries: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        CheckConstraint(_one_of("status", OrderStatus), name="status"),
        CheckConstraint(
            f"action IS NULL OR {_one_of('action', (Action.PAY, Action.CANCEL))}", name="action"
        ),
        CheckConstraint(
            "(action IS NULL) = (action_token IS NULL)"
            " AND (action IS NULL) = (action_expires IS NULL)",
            name="action_claim",
        ),
        CheckConstraint(f"refund IS NULL OR {_one_of('refund', RefundStatus)}", name="refund"),
        CheckConstraint("refund IS NULL OR payment_id IS NOT NULL", name="refund_payment"),
        CheckConstraint("owner <> ''", name="owner"),
        CheckConstraint("charge_attempt >= 0", name="charge_attempt"),
        CheckConstraint("version >= 0", name="version"),
        CheckConstraint("retries >= 0", name="retries"),
        # "This user's orders, newest first" is a backward scan of this index, id breaking ties.
        Index("ix_orders_owner_created", "owner", "created", "id"),
        Index("ix_orders_due", "due", postgresql_where=text("due IS NOT NULL")),
    )


class OrderItemRecord(Base):
    __tablename__ = "order_items"

    # The primary key (order_id, position) is also the index that serves order_id lookups.
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    product: Mapped[str] = mapped_column(Text)
    size: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (
        CheckConstraint("product <> ''", name="product"),
        CheckConstraint(_one_of("size", Size), name="size"),
        CheckConstraint(f"quantity BETWEEN 1 AND {MAX_QUANTITY}", name="quantity"),
        CheckConstraint("position >= 0", name="position"),
    )


class OutboxRecord(Base):
    """Events waiting to be published, written in the transaction of the change they
    describe (transactional outbox). No foreign key: an order's events outlive it."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(as_uuid=True), primary_key=True)
    # The order in which events were written, across all orders.
    position: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid(as_uuid=True))
    sequence: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(Text)
    occurred: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The message body as published.
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    published: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("order_id", "sequence"),
        CheckConstraint(_one_of("type", EventType), name="type"),
        CheckConstraint("sequence >= 1", name="sequence"),
        Index("ix_outbox_unpublished", "position", postgresql_where=text("published IS NULL")),
    )


class IdempotencyKeyRecord(Base):
    """A caller's idempotency key: while its request runs, who holds it and until when;
    then the answer to replay (docs/adr/0006-idempotency-key-store.md). Gone once expired."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # SHA-256 of the request (method, path, body): the same key for another request is refused.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    token: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[int | None] = mapped_column(SmallInteger)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    location: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Either running (held by a token until `locked_until`) or answered, never both.
        CheckConstraint(
            "(status IS NULL) = (body IS NULL)"
            " AND (status IS NULL) = (locked_until IS NOT NULL)"
            " AND (token IS NULL) = (locked_until IS NULL)",
            name="state",
        ),
        CheckConstraint("status IS NULL OR status BETWEEN 100 AND 599", name="status"),
        # The clean-up deletes by expiry.
        Index("ix_idempotency_keys_expires", "expires"),
    )


class InboxRecord(Base):
    """Ids of the status messages already handled: a message seen again changes nothing."""

    __tablename__ = "inbox"

    message_id: Mapped[str] = mapped_column(Text, primary_key=True)
    handled: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


orders_table = cast(Table, OrderRecord.__table__)
order_items_table = cast(Table, OrderItemRecord.__table__)
inbox_table = cast(Table, InboxRecord.__table__)
