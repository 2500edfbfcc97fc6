"""audit chain: unique previous hash, so concurrent appenders cannot fork the chain

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 08:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Fails on a database whose chain already forked; `pacsflow audit verify` names the entry.
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_audit_log_prev_hash", ["prev_hash"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_log_prev_hash", type_="unique")
