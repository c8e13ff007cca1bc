"""project spend rollups (daily and hourly) for organisation-wide spend questions; events with
an outcome by time

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIMENSIONS = ("department", "project", "client", "provider", "model")
_MEASURES = ("cost_picos", "events", "input_tokens", "output_tokens", "unpriced_events")
_EVENT_COLUMNS = {"model": "model_used"}


def _rollup_table(name: str, period: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column(period, sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("client", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("cost_picos", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_events", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", period, *_DIMENSIONS, name=f"uq_{name}_key"),
    )


def upgrade() -> None:
    _rollup_table("project_spend_rollup", "day")
    _rollup_table("project_spend_rollup_hourly", "hour")
    op.create_index(
        "ix_event_tenant_outcome_time",
        "economic_event",
        ["tenant_id", "ts_ms"],
        unique=False,
        sqlite_where=sa.text("outcome IS NOT NULL"),
        postgresql_where=sa.text("outcome IS NOT NULL"),
    )
    # A ledger that already has events gets its project rollups: by day from its spend
    # rollup, by hour from the events.
    key = ", ".join(("tenant_id", "day", *_DIMENSIONS))
    columns = ", ".join((*_DIMENSIONS, *_MEASURES))
    sums = ", ".join(f"SUM({m})" for m in _MEASURES)
    op.execute(
        f"INSERT INTO project_spend_rollup ({key}, {', '.join(_MEASURES)}) "
        f"SELECT {key}, {sums} FROM spend_rollup GROUP BY {key}"
    )
    grouped = ", ".join(
        (
            "tenant_id",
            "ts_ms / 3600000",
            *(f"COALESCE({_EVENT_COLUMNS.get(d, d)}, '')" for d in _DIMENSIONS),
        )
    )
    op.execute(
        f"INSERT INTO project_spend_rollup_hourly (tenant_id, hour, {columns}) "
        f"SELECT {grouped}, COALESCE(SUM(cost_picos), 0), COUNT(*), "
        "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
        f"COUNT(*) - COUNT(cost_picos) FROM economic_event GROUP BY {grouped}"
    )


def downgrade() -> None:
    op.drop_index(
        "ix_event_tenant_outcome_time",
        table_name="economic_event",
        sqlite_where=sa.text("outcome IS NOT NULL"),
        postgresql_where=sa.text("outcome IS NOT NULL"),
    )
    op.drop_table("project_spend_rollup_hourly")
    op.drop_table("project_spend_rollup")
