"""Idempotency keys: the answer to each keyed request, per caller, until it expires.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("token", sa.Uuid(), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status IS NULL) = (body IS NULL)"
            " AND (status IS NULL) = (locked_until IS NOT NULL)"
            " AND (token IS NULL) = (locked_until IS NULL)",
            name=op.f("ck_idempotency_keys_state"),
        ),
        sa.CheckConstraint(
            "status IS NULL OR status BETWEEN 100 AND 599",
            name=op.f("ck_idempotency_keys_status"),
        ),
        sa.PrimaryKeyConstraint("owner", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_expires", "idempotency_keys", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
