"""imported provider usage

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 04:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_mapping",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("employee", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "provider", "field", "value", name="uq_import_mapping"),
    )
    op.create_table(
        "imported_usage",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("natural_key", sa.String(length=64), nullable=False),
        sa.Column("bucket_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("bucket_end_ms", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("line_item", sa.String(length=300), nullable=True),
        sa.Column("provider_project_id", sa.String(length=200), nullable=True),
        sa.Column("provider_api_key_id", sa.String(length=200), nullable=True),
        sa.Column("provider_user_id", sa.String(length=200), nullable=True),
        sa.Column("provider_workspace_id", sa.String(length=200), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=True),
        sa.Column("cost_picos", sa.BigInteger(), nullable=True),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("employee", sa.String(length=200), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("imported_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "provider", "natural_key", name="uq_imported_usage_key"),
    )
    op.create_index(
        "ix_imported_usage_tenant_bucket",
        "imported_usage",
        ["tenant_id", "provider", "bucket_start_ms"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_imported_usage_tenant_bucket", table_name="imported_usage")
    op.drop_table("imported_usage")
    op.drop_table("import_mapping")
