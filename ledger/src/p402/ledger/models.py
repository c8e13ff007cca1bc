"""The ledger's tables (SQLModel): tenants, API keys and economic events.

Money columns hold integer picodollars (:mod:`p402.instrumentation.money`); timestamps are
epoch milliseconds in 64-bit columns. Usage or cost that was not measured is NULL, never 0.
"""

from __future__ import annotations

import secrets

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from p402.instrumentation.vocabulary import PrivacyMode

__all__ = [
    "ROLLUP_DIMENSIONS",
    "ApiKey",
    "Department",
    "EconomicEvent",
    "Employee",
    "PriceOverride",
    "Project",
    "Session",
    "SpendRollup",
    "Tenant",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL needs 64 bits.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def _bigint(*, nullable: bool = True, index: bool = False) -> Column[int]:
    return Column(BigInteger(), nullable=nullable, index=index)


class Tenant(SQLModel, table=True):
    """An organisation: every other row belongs to exactly one tenant."""

    __tablename__ = "tenant"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=200)
    max_privacy_mode: str = Field(default=PrivacyMode.METADATA_ONLY.value, max_length=32)
    fingerprint_key: str = Field(
        default_factory=lambda: secrets.token_hex(32), max_length=64
    )  # keys the fingerprints the receiver makes of content a tenant may not store
    created_ms: int = Field(sa_column=_bigint(nullable=False))


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 is stored; the key itself is shown once at creation."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    role: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_ms: int = Field(sa_column=_bigint(nullable=False))
    revoked_ms: int | None = Field(default=None, sa_column=_bigint())


class EconomicEvent(SQLModel, table=True):
    """One metered LLM exchange, with its owners, usage, cost and evidence."""

    __tablename__ = "economic_event"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_event_tenant_event_id"),
        # One logical call reported by other instrumentations is one event (P402's own
        # reports are matched against them in ``insert_events``).
        Index(
            "uq_event_tenant_foreign_response",
            "tenant_id",
            "response_key",
            unique=True,
            sqlite_where=text("source != 'p402'"),
            postgresql_where=text("source != 'p402'"),
        ),
        Index("ix_event_tenant_response", "tenant_id", "response_key"),
        Index("ix_event_tenant_session", "tenant_id", "session"),
        Index("ix_event_tenant_time", "tenant_id", "ts_ms"),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: int = Field(foreign_key="tenant.id")
    event_id: str = Field(max_length=64)
    ts_ms: int = Field(sa_column=_bigint(nullable=False))
    received_ms: int = Field(sa_column=_bigint(nullable=False))

    provider: str | None = Field(default=None, max_length=64)
    operation: str | None = Field(default=None, max_length=32)
    model_requested: str | None = Field(default=None, max_length=200)
    model_used: str | None = Field(default=None, max_length=200)
    model_original: str | None = Field(default=None, max_length=200)

    input_tokens: int | None = Field(default=None, sa_column=_bigint())
    output_tokens: int | None = Field(default=None, sa_column=_bigint())
    cache_read_tokens: int | None = Field(default=None, sa_column=_bigint())
    cache_write_tokens: int | None = Field(default=None, sa_column=_bigint())
    reasoning_tokens: int | None = Field(default=None, sa_column=_bigint())

    cost_picos: int | None = Field(default=None, sa_column=_bigint())
    client_cost_picos: int | None = Field(default=None, sa_column=_bigint())
    cost_mismatch: bool = False
    cost_evidence: str = Field(max_length=32)
    usage_evidence: str = Field(max_length=32)
    price_version: str | None = Field(default=None, max_length=120)
    original_cost_picos: int | None = Field(default=None, sa_column=_bigint())
    original_price_version: str | None = Field(default=None, max_length=120)
    rerated_ms: int | None = Field(default=None, sa_column=_bigint())
    batch: str | None = Field(default=None, max_length=32, index=True)
    """The ingest request that wrote the row: what the rollups add, exactly once."""
    """Set once an event is re-rated: the figures it was first recorded with, and when."""

    policy_result: str = Field(default="allowed", max_length=16)
    policy_reason: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    privacy_mode: str = Field(max_length=32)

    department: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=200)
    client: str | None = Field(default=None, max_length=200)
    employee: str | None = Field(default=None, max_length=200)
    session: str | None = Field(default=None, max_length=200)
    workflow: str | None = Field(default=None, max_length=200)
    feature: str | None = Field(default=None, max_length=200)
    customer: str | None = Field(default=None, max_length=200)
    task_type: str | None = Field(default=None, max_length=200)

    source: str = Field(default="p402", max_length=16)
    """``p402`` for P402 economic-event spans, ``genai`` for other instrumentations' spans."""
    response_key: str | None = Field(default=None, max_length=300)
    """``{provider}:{response id}``: what makes two reports of one call the same event."""
    content_input: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    content_output: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    fingerprint_input: str | None = Field(default=None, max_length=64)
    fingerprint_output: str | None = Field(default=None, max_length=64)

    outcome: str | None = Field(default=None, max_length=16)
    response_id: str | None = Field(default=None, max_length=200)
    trace_id: str | None = Field(default=None, max_length=32)
    span_id: str | None = Field(default=None, max_length=16)
    attempt: int = 0
    status_code: int | None = None
    error_type: str | None = Field(default=None, max_length=200)
    receipt_id: str | None = Field(default=None, max_length=64)
    evidence_status: str = Field(default="pending", max_length=16)


class PriceOverride(SQLModel, table=True):
    """A tenant's negotiated rates for a model (USD per million tokens, decimal strings), used
    by the receiver instead of the public price data while in force."""

    __tablename__ = "price_override"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    provider: str | None = Field(default=None, max_length=64)  # None: any provider
    model: str = Field(max_length=200)  # the model used; fnmatch patterns such as "gpt-5*"
    input_per_mtok: str = Field(max_length=40)
    output_per_mtok: str = Field(max_length=40)
    cache_read_per_mtok: str | None = Field(default=None, max_length=40)
    cache_write_per_mtok: str | None = Field(default=None, max_length=40)
    valid_from_ms: int | None = Field(default=None, sa_column=_bigint())
    valid_to_ms: int | None = Field(default=None, sa_column=_bigint())


ROLLUP_DIMENSIONS = ("department", "project", "client", "employee", "provider", "model")
"""The dimensions spend is rolled up by (per tenant and UTC day); a missing value is ''."""


class SpendRollup(SQLModel, table=True):
    """Spend per tenant, UTC day and owner/model combination, kept up to date by every ingest
    transaction so that spend queries and budget checks never scan raw events."""

    __tablename__ = "spend_rollup"
    __table_args__ = (
        UniqueConstraint("tenant_id", "day", *ROLLUP_DIMENSIONS, name="uq_spend_rollup_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    day: int  # days since 1970-01-01, UTC
    department: str = Field(default="", max_length=200)
    project: str = Field(default="", max_length=200)
    client: str = Field(default="", max_length=200)
    employee: str = Field(default="", max_length=200)
    provider: str = Field(default="", max_length=64)
    model: str = Field(default="", max_length=200)
    cost_picos: int = Field(default=0, sa_column=_bigint(nullable=False))
    events: int = Field(default=0, sa_column=_bigint(nullable=False))
    input_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    output_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    unpriced_events: int = Field(default=0, sa_column=_bigint(nullable=False))


class Department(SQLModel, table=True):
    """A department a tenant's events name (registered by the ingest that first names it)."""

    __tablename__ = "department"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_department_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    name: str = Field(max_length=200)
    first_seen_ms: int = Field(sa_column=_bigint(nullable=False))


class Project(SQLModel, table=True):
    """A project, with a department and client its events name (the first registered)."""

    __tablename__ = "project"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_project_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    name: str = Field(max_length=200)
    department: str | None = Field(default=None, max_length=200)
    client: str | None = Field(default=None, max_length=200)
    first_seen_ms: int = Field(sa_column=_bigint(nullable=False))


class Employee(SQLModel, table=True):
    """An employee, with a department their events name (the first registered)."""

    __tablename__ = "employee"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_employee_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    name: str = Field(max_length=200)
    department: str | None = Field(default=None, max_length=200)
    first_seen_ms: int = Field(sa_column=_bigint(nullable=False))


class Session(SQLModel, table=True):
    """A session (``p402.owner.session``): its span of time and owners, kept by every ingest
    (its events and cost are read from the events themselves); sealed into a receipt once
    idle or closed."""

    __tablename__ = "session"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_session_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    name: str = Field(max_length=200)
    employee: str | None = Field(default=None, max_length=200)
    department: str | None = Field(default=None, max_length=200)
    first_event_ms: int = Field(sa_column=_bigint(nullable=False))
    last_event_ms: int = Field(sa_column=_bigint(nullable=False))
    last_received_ms: int = Field(sa_column=_bigint(nullable=False))
    closed_ms: int | None = Field(default=None, sa_column=_bigint())
    receipt_id: str | None = Field(default=None, max_length=64)


# == budgets and policies (migration 0006) ==

# == scheduler signals (migration 0007) ==

# == settlement (migration 0008) ==

# == imports (migration 0009) ==
