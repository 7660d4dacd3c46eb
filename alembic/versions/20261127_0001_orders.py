"""Orders and their items.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column(
            "created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("status", sa.Text(), server_default="created", nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column("schedule_id", sa.Text(), nullable=True),
        sa.Column("charge_attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("charge_pending", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("action_token", sa.Uuid(), nullable=True),
        sa.Column("action_expires", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('created', 'paid', 'progress', 'cancelled', 'dispatched', 'delivered')",
            name=op.f("ck_orders_status"),
        ),
        sa.CheckConstraint(
            "action IS NULL OR action IN ('pay', 'cancel')", name=op.f("ck_orders_action")
        ),
        sa.CheckConstraint(
            "(action IS NULL) = (action_token IS NULL)"
            " AND (action IS NULL) = (action_expires IS NULL)",
            name=op.f("ck_orders_action_claim"),
        ),
        sa.CheckConstraint("owner <> ''", name=op.f("ck_orders_owner")),
        sa.CheckConstraint("charge_attempt >= 0", name=op.f("ck_orders_charge_attempt")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_index("ix_orders_owner_created", "orders", ["owner", "created", "id"])
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("size", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.CheckConstraint("product <> ''", name=op.f("ck_order_items_product")),
        sa.CheckConstraint("size IN ('small', 'medium', 'big')", name=op.f("ck_order_items_size")),
        sa.CheckConstraint("quantity BETWEEN 1 AND 1000000", name=op.f("ck_order_items_quantity")),
        sa.CheckConstraint("position >= 0", name=op.f("ck_order_items_position")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_items_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "position", name=op.f("pk_order_items")),
    )


def downgrade() -> None:
    op.drop_table("order_items")
    op.drop_index("ix_orders_owner_created", table_name="orders")
    op.drop_table("orders")
