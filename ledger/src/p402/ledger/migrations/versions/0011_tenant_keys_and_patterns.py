"""a tenant's signing key for private_gateway events, and its own redaction patterns

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 08:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("signing_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("redact_patterns", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("redact_patterns")
        batch.drop_column("signing_key")
