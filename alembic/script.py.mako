"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
${imports if imports else ""}
from alembic import op

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


# Each migration runs in one transaction, with lock_timeout = DB_MIGRATION_LOCK_TIMEOUT and
# statement_timeout = DB_MIGRATION_STATEMENT_TIMEOUT: a statement that cannot get its lock in
# time fails instead of stalling the table's traffic behind it.
#
# An index on a table in use is built CONCURRENTLY, which PostgreSQL refuses inside a
# transaction; Alembic's autocommit block runs it outside one:
#
#     with op.get_context().autocommit_block():
#         # A build that failed half-way leaves an INVALID index behind: start clean.
#         op.drop_index("ix_orders_status", "orders", postgresql_concurrently=True, if_exists=True)
#         op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
#
# downgrade() drops it the same way. Keep such a migration to that block alone, and raise
# DB_MIGRATION_STATEMENT_TIMEOUT for the deployment if the build takes longer.


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
