"""The order lifecycle (pending schedule and refund, the reconciler's due time, versions) and
the transactional outbox of order events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TYPES = (
    "order.placed",
    "order.updated",
    "order.paid",
    "order.scheduled",
    "order.cancelled",
    "order.refunded",
    "order.dispatched",
    "order.delivered",
    "order.deleted",
)


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("version", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "orders",
        sa.Column("schedule_pending", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("orders", sa.Column("refund", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("refund_id", sa.Uuid(), nullable=True))
    op.add_column("orders", sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("due", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "orders", sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_orders_refund"),
        "orders",
        "refund IS NULL OR refund IN ('owed', 'refunded', 'refused')",
    )
    op.create_check_constraint(
        op.f("ck_orders_refund_payment"), "orders", "refund IS NULL OR payment_id IS NOT NULL"
    )
    op.create_check_constraint(op.f("ck_orders_version"), "orders", "version >= 0")
    op.create_check_constraint(op.f("ck_orders_retries"), "orders", "retries >= 0")
    # Orders placed so far recorded one event (placed). Claims and charges in flight become
    # the reconciler's work: due when the claim runs out, or now for an unknown charge.
    op.execute(
        "UPDATE orders SET version = 1,"
        " due = CASE WHEN action IS NOT NULL THEN action_expires"
        " WHEN charge_pending THEN now() END,"
        " pending_since = CASE WHEN charge_pending THEN now() END"
    )
    op.create_index("ix_orders_due", "orders", ["due"], postgresql_where=sa.text("due IS NOT NULL"))

    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("occurred", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("published", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "type IN (" + ", ".join(f"'{name}'" for name in EVENT_TYPES) + ")",
            name=op.f("ck_outbox_type"),
        ),
        sa.CheckConstraint("sequence >= 1", name=op.f("ck_outbox_sequence")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("order_id", "sequence", name=op.f("uq_outbox_order_id_sequence")),
        sa.UniqueConstraint("position", name=op.f("uq_outbox_position")),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["position"],
        postgresql_where=sa.text("published IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_orders_due", table_name="orders")
    for name in ("retries", "version", "refund_payment", "refund"):
        op.drop_constraint(op.f(f"ck_orders_{name}"), "orders", type_="check")
    for column in (
        "retries",
        "due",
        "pending_since",
        "refund_id",
        "refund",
        "schedule_pending",
        "version",
    ):
        op.drop_column("orders", column)
