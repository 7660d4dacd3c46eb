"""The database schema, as typed SQLAlchemy models. Alembic migrations are checked against it.

The records are the schema's single source of truth; the repository queries their tables with
SQLAlchemy Core and maps rows to domain objects, so no record ever leaves this package.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orders.domain import Action, OrderStatus, Size
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
    payment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    schedule_id: Mapped[str | None] = mapped_column(Text)
    charge_attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    charge_pending: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # A pay or cancel in flight holds the order until `action_expires` (see service.orders).
    action: Mapped[str | None] = mapped_column(Text)
    action_token: Mapped[uuid.UUID | None] = mapped_column(Uuid(as_uuid=True))
    action_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The service queries the tables with Core; the relationships describe the aggregate for
    # anything that uses the ORM (scripts, consoles), and refuse to lazy-load under asyncio.
    items: Mapped[list[OrderItemRecord]] = relationship(
        back_populates="order",
        lazy="raise",
        order_by="OrderItemRecord.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

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
        CheckConstraint("owner <> ''", name="owner"),
        CheckConstraint("charge_attempt >= 0", name="charge_attempt"),
        # "This user's orders, newest first" is a backward scan of this index, id breaking ties.
        Index("ix_orders_owner_created", "owner", "created", "id"),
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

    order: Mapped[OrderRecord] = relationship(back_populates="items", lazy="raise")

    __table_args__ = (
        CheckConstraint("product <> ''", name="product"),
        CheckConstraint(_one_of("size", Size), name="size"),
        CheckConstraint(f"quantity BETWEEN 1 AND {MAX_QUANTITY}", name="quantity"),
        CheckConstraint("position >= 0", name="position"),
    )


orders_table = cast(Table, OrderRecord.__table__)
order_items_table = cast(Table, OrderItemRecord.__table__)
