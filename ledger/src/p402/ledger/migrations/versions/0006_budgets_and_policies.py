"""budgets, policies, model tiers and budget holds

Also each session's cost (``session.cost_picos``), with the triggers that keep it exact when
events are deleted (a P402 report replacing another instrumentation's) or re-rated; ingest
adds new events' costs itself (:mod:`p402.ledger.owners`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 04:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER session_cost_on_event_delete AFTER DELETE ON economic_event
    FOR EACH ROW WHEN OLD.session IS NOT NULL AND OLD.cost_picos IS NOT NULL
    BEGIN
        UPDATE session SET cost_picos = cost_picos - OLD.cost_picos
        WHERE tenant_id = OLD.tenant_id AND name = OLD.session;
    END
    """,
    """
    CREATE TRIGGER session_cost_on_event_update AFTER UPDATE OF cost_picos, session
    ON economic_event FOR EACH ROW
    BEGIN
        UPDATE session SET cost_picos = cost_picos - OLD.cost_picos
        WHERE OLD.session IS NOT NULL AND OLD.cost_picos IS NOT NULL
            AND tenant_id = OLD.tenant_id AND name = OLD.session;
        UPDATE session SET cost_picos = cost_picos + NEW.cost_picos
        WHERE NEW.session IS NOT NULL AND NEW.cost_picos IS NOT NULL
            AND tenant_id = NEW.tenant_id AND name = NEW.session;
    END
    """,
)
_POSTGRESQL_TRIGGERS = (
    """
    CREATE FUNCTION p402_session_cost() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.session IS NOT NULL AND OLD.cost_picos IS NOT NULL THEN
            UPDATE session SET cost_picos = cost_picos - OLD.cost_picos
            WHERE tenant_id = OLD.tenant_id AND name = OLD.session;
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.session IS NOT NULL AND NEW.cost_picos IS NOT NULL THEN
            UPDATE session SET cost_picos = cost_picos + NEW.cost_picos
            WHERE tenant_id = NEW.tenant_id AND name = NEW.session;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER session_cost_on_event_change
    AFTER DELETE OR UPDATE OF cost_picos, session ON economic_event
    FOR EACH ROW EXECUTE FUNCTION p402_session_cost()
    """,
)


def upgrade() -> None:
    op.create_table(
        "budget",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("cap_picos", sa.BigInteger(), nullable=False),
        sa.Column("action_at_cap", sa.String(length=16), nullable=False),
        sa.Column("downgrade_model", sa.String(length=200), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "scope", "name", "period", name="uq_budget_key"),
    )
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column("min_model", sa.String(length=200), nullable=True),
        sa.Column("max_model", sa.String(length=200), nullable=True),
        sa.Column("routing", sa.String(length=32), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "department", name="uq_policy_department"),
    )
    op.create_table(
        "model_tier_override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "model", name="uq_model_tier_override"),
    )
    op.create_table(
        "budget_hold",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("employee", sa.String(length=200), nullable=True),
        sa.Column("session", sa.String(length=200), nullable=True),
        sa.Column("amount_picos", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "event_id", name="uq_budget_hold_event"),
    )
    with op.batch_alter_table("budget_hold", schema=None) as batch_op:
        batch_op.create_index(
            "ix_budget_hold_tenant_expiry", ["tenant_id", "expires_ms"], unique=False
        )
    with op.batch_alter_table("session", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cost_picos", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    # Sessions registered before this revision: their cost from their events.
    op.execute(
        "UPDATE session SET cost_picos = COALESCE((SELECT SUM(e.cost_picos) FROM economic_event e "
        "WHERE e.tenant_id = session.tenant_id AND e.session = session.name), 0)"
    )
    triggers = (
        _POSTGRESQL_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    )
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER session_cost_on_event_change ON economic_event")
        op.execute("DROP FUNCTION p402_session_cost()")
    else:
        op.execute("DROP TRIGGER session_cost_on_event_update")
        op.execute("DROP TRIGGER session_cost_on_event_delete")
    with op.batch_alter_table("session", schema=None) as batch_op:
        batch_op.drop_column("cost_picos")
    with op.batch_alter_table("budget_hold", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_hold_tenant_expiry")
    op.drop_table("budget_hold")
    op.drop_table("model_tier_override")
    op.drop_table("policy")
    op.drop_table("budget")
