"""re-rating keeps the original figures

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:47:04.718257
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("original_cost_picos", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("original_price_version", sa.String(length=120), nullable=True)
        )
        batch_op.add_column(sa.Column("rerated_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.drop_column("rerated_ms")
        batch_op.drop_column("original_price_version")
        batch_op.drop_column("original_cost_picos")
