"""receipts and settlement batches

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 04:00:00.000000

Sealed receipts, their event leaves and their batch memberships are immutable: on
PostgreSQL a trigger refuses UPDATE, TRUNCATE and DELETE of them, DELETE being allowed only
in a transaction that set ``SET LOCAL p402.erasing = 'on'`` (tenant data deletion); on
SQLite a trigger refuses UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IMMUTABLE_TABLES = ("receipt", "receipt_leaf", "settlement_leaf")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION p402_refuse_sealed_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('p402.erasing', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sealed receipts are immutable: % of % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'only tenant data deletion may delete them, after SET LOCAL p402.erasing = ''on''';
END
$$
"""


def _create_immutability_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in IMMUTABLE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION p402_refuse_sealed_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION p402_refuse_sealed_change()"
            )
    elif dialect == "sqlite":
        for table in IMMUTABLE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'sealed receipts are immutable: UPDATE of {table} "
                f"refused'); END"
            )


def _drop_immutability_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in IMMUTABLE_TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        elif dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS p402_refuse_sealed_change()")


def upgrade() -> None:
    op.create_table(
        "receipt",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("session", sa.String(length=200), nullable=True),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("first_event_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_event_ms", sa.BigInteger(), nullable=False),
        sa.Column("sealed_ms", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("receipt_hash", sa.String(length=64), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "seq", name="uq_receipt_tenant_seq"),
    )
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.create_index("ix_receipt_tenant_sealed", ["tenant_id", "sealed_ms"], unique=False)
        batch_op.create_index("ix_receipt_tenant_session", ["tenant_id", "session"], unique=False)

    op.create_table(
        "receipt_leaf",
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["receipt_id"], ["receipt.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("receipt_id", "leaf_index"),
    )
    with op.batch_alter_table("receipt_leaf", schema=None) as batch_op:
        batch_op.create_index("ix_receipt_leaf_event", ["tenant_id", "event_id"], unique=False)

    op.create_table(
        "settlement_batch",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=True),
        sa.Column("submitter", sa.String(length=42), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("raw_tx", sa.Text(), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(length=66), nullable=True),
        sa.Column("final_ms", sa.BigInteger(), nullable=True),
        sa.Column("reanchors", sa.Integer(), nullable=False),
        sa.Column("superseded_tx", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "seq", name="uq_settlement_batch_tenant_seq"),
    )
    with op.batch_alter_table("settlement_batch", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_batch_state", ["state"], unique=False)

    op.create_table(
        "settlement_leaf",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["settlement_batch.id"]),
        sa.ForeignKeyConstraint(["receipt_id"], ["receipt.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("batch_id", "leaf_index"),
        sa.UniqueConstraint("receipt_id"),
    )

    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_unsealed",
            ["tenant_id", "session", "received_ms"],
            unique=False,
            sqlite_where=sa.text("receipt_id IS NULL"),
            postgresql_where=sa.text("receipt_id IS NULL"),
        )

    _create_immutability_triggers()


def downgrade() -> None:
    _drop_immutability_triggers()
    with op.batch_alter_table("economic_event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_unsealed")
    op.drop_table("settlement_leaf")
    op.drop_table("settlement_batch")
    op.drop_table("receipt_leaf")
    op.drop_table("receipt")
