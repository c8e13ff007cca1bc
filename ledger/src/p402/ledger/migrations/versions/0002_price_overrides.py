"""negotiated rates per tenant

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:39:04.801557
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("input_per_mtok", sa.String(length=40), nullable=False),
        sa.Column("output_per_mtok", sa.String(length=40), nullable=False),
        sa.Column("cache_read_per_mtok", sa.String(length=40), nullable=True),
        sa.Column("cache_write_per_mtok", sa.String(length=40), nullable=True),
        sa.Column("valid_from_ms", sa.BigInteger(), nullable=True),
        sa.Column("valid_to_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("price_override", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_price_override_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("price_override", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_override_tenant_id"))

    op.drop_table("price_override")
