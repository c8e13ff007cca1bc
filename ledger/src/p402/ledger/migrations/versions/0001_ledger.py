"""the ledger: tenants, API keys and economic events

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 02:29:50.860760
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "tenant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("max_privacy_mode", sa.String(length=32), nullable=False),
        sa.Column("fingerprint_key", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_key_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "economic_event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("operation", sa.String(length=32), nullable=True),
        sa.Column("model_requested", sa.String(length=200), nullable=True),
        sa.Column("model_used", sa.String(length=200), nullable=True),
        sa.Column("model_original", sa.String(length=200), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost_picos", sa.BigInteger(), nullable=True),
        sa.Column("client_cost_picos", sa.BigInteger(), nullable=True),
        sa.Column("cost_mismatch", sa.Boolean(), nullable=False),
        sa.Column("cost_evidence", sa.String(length=32), nullable=False),
        sa.Column("usage_evidence", sa.String(length=32), nullable=False),
        sa.Column("price_version", sa.String(length=120), nullable=True),
        sa.Column("policy_result", sa.String(length=16), nullable=False),
        sa.Column("policy_reason", sa.Text(), nullable=True),
        sa.Column("privacy_mode", sa.String(length=32), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("client", sa.String(length=200), nullable=True),
        sa.Column("employee", sa.String(length=200), nullable=True),
        sa.Column("session", sa.String(length=200), nullable=True),
        sa.Column("workflow", sa.String(length=200), nullable=True),
        sa.Column("feature", sa.String(length=200), nullable=True),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("task_type", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("response_key", sa.String(length=300), nullable=True),
        sa.Column("content_input", sa.Text(), nullable=True),
        sa.Column("content_output", sa.Text(), nullable=True),
        sa.Column("fingerprint_input", sa.String(length=64), nullable=True),
        sa.Column("fingerprint_output", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("response_id", sa.String(length=200), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("span_id", sa.String(length=16), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("receipt_id", sa.String(length=64), nullable=True),
        sa.Column("evidence_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("tenant_id", "event_id", name="uq_event_tenant_event_id"),
    )
    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_tenant_response", ["tenant_id", "response_key"], unique=False
        )
        batch_op.create_index("ix_event_tenant_time", ["tenant_id", "ts_ms"], unique=False)
        batch_op.create_index(
            "uq_event_tenant_foreign_response",
            ["tenant_id", "response_key"],
            unique=True,
            sqlite_where=sa.text("source != 'p402'"),
            postgresql_where=sa.text("source != 'p402'"),
        )


def downgrade() -> None:

    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_event_tenant_foreign_response",
            sqlite_where=sa.text("source != 'p402'"),
            postgresql_where=sa.text("source != 'p402'"),
        )
        batch_op.drop_index("ix_event_tenant_time")
        batch_op.drop_index("ix_event_tenant_response")

    op.drop_table("economic_event")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_key_tenant_id"))

    op.drop_table("api_key")
    op.drop_table("tenant")
