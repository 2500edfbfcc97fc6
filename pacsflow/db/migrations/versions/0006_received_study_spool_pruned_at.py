"""received studies: when their spool folder was pruned, so that a partial folder started
by a late instance is not read as the study

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 00:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("received_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spool_pruned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("received_studies", schema=None) as batch_op:
        batch_op.drop_column("spool_pruned_at")
