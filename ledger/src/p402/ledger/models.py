"""The ledger's tables (SQLModel): tenants, API keys and economic events.

Money columns hold integer picodollars (:mod:`p402.instrumentation.money`); timestamps are
epoch milliseconds in 64-bit columns. Usage or cost that was not measured is NULL, never 0.
"""

from __future__ import annotations

import secrets

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from p402.instrumentation.vocabulary import EvidenceStatus, PrivacyMode

__all__ = [
    "IMPORT_SOURCE_FIELDS",
    "PROJECT_ROLLUP_DIMENSIONS",
    "ROLLUP_DIMENSIONS",
    "Alert",
    "Anomaly",
    "ApiKey",
    "Budget",
    "BudgetHold",
    "Department",
    "DepartmentPolicy",
    "EconomicEvent",
    "Employee",
    "ImportMapping",
    "ImportedUsage",
    "ModelTierOverride",
    "Outcome",
    "PriceOverride",
    "Project",
    "ProjectSpendRollup",
    "ProjectSpendRollupHourly",
    "RoutingObservation",
    "SchedulerLease",
    "SchedulerWatermark",
    "Session",
    "SpendRollup",
    "Tenant",
    "Webhook",
    "WebhookDelivery",
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
    signing_key: str | None = Field(
        default=None, max_length=64
    )  # private_gateway events may be signed with it, besides the key that sends them (0011)
    redact_patterns: str | None = Field(
        default=None, sa_column=Column(Text(), nullable=True)
    )  # the tenant's own redaction patterns, a JSON list (0011)


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
    # Set once an event is re-rated: the figures it was first recorded with, and when.
    original_cost_picos: int | None = Field(default=None, sa_column=_bigint())
    original_price_version: str | None = Field(default=None, max_length=120)
    rerated_ms: int | None = Field(default=None, sa_column=_bigint())
    batch: str | None = Field(default=None, max_length=32, index=True)
    """The ingest request that wrote the row: what the rollups add, exactly once."""

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
    evidence_status: str = Field(default=EvidenceStatus.PENDING.value, max_length=16)


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
    """A session (``p402.owner.session``): its span of time, owners and cost, kept by every
    ingest (its events are read from the events themselves); sealed into a receipt once idle
    or closed."""

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
    cost_picos: int = Field(
        default=0, sa_column=Column(BigInteger(), nullable=False, server_default=text("0"))
    )
    """The session's cost so far: added by every ingest, kept exact when events are replaced
    or re-rated (see :mod:`p402.ledger.owners`); what session budgets are checked against."""


# == budgets and policies (migration 0006) ==


class Budget(SQLModel, table=True):
    """A spending cap on one scope (the organisation, or the department, project, employee or
    session called ``name``) for each UTC calendar ``period``, and what happens at the cap."""

    __tablename__ = "budget"
    __table_args__ = (
        UniqueConstraint("tenant_id", "scope", "name", "period", name="uq_budget_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    scope: str = Field(max_length=16)  # BudgetScope
    name: str = Field(default="", max_length=200)  # '' for the organisation
    period: str = Field(default="month", max_length=8)  # BudgetPeriod
    cap_picos: int = Field(sa_column=_bigint(nullable=False))
    action_at_cap: str = Field(default="notify", max_length=16)  # CapAction
    downgrade_model: str | None = Field(default=None, max_length=200)
    updated_ms: int = Field(sa_column=_bigint(nullable=False))


class DepartmentPolicy(SQLModel, table=True):
    """A department's model tier bounds and routing preference."""

    __tablename__ = "policy"
    __table_args__ = (UniqueConstraint("tenant_id", "department", name="uq_policy_department"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    department: str = Field(max_length=200)
    min_model: str | None = Field(default=None, max_length=200)
    max_model: str | None = Field(default=None, max_length=200)
    routing: str = Field(default="quality-first", max_length=32)  # RoutingPreference
    updated_ms: int = Field(sa_column=_bigint(nullable=False))


class ModelTierOverride(SQLModel, table=True):
    """A tenant's own tier for a model, ahead of the built-in table."""

    __tablename__ = "model_tier_override"
    __table_args__ = (UniqueConstraint("tenant_id", "model", name="uq_model_tier_override"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    model: str = Field(max_length=200)
    tier: str = Field(max_length=16)  # ModelTier


class BudgetHold(SQLModel, table=True):
    """A reservation made by ``POST /v1/authorize``: the most a call about to be sent can
    cost, counted against its owners' budgets until its event is ingested or it expires."""

    __tablename__ = "budget_hold"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_budget_hold_event"),
        Index("ix_budget_hold_tenant_expiry", "tenant_id", "expires_ms"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: int = Field(foreign_key="tenant.id")
    event_id: str = Field(max_length=64)
    model: str = Field(max_length=200)
    department: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=200)
    employee: str | None = Field(default=None, max_length=200)
    session: str | None = Field(default=None, max_length=200)
    amount_picos: int = Field(sa_column=_bigint(nullable=False))
    created_ms: int = Field(sa_column=_bigint(nullable=False))
    expires_ms: int = Field(sa_column=_bigint(nullable=False))


# == scheduler signals (migration 0007) ==


class SchedulerLease(SQLModel, table=True):
    """Which server runs the scheduler's jobs: one holder at a time, renewing the lease before
    it expires; another server takes the lease over only once it has expired."""

    __tablename__ = "scheduler_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=200)
    acquired_ms: int = Field(sa_column=_bigint(nullable=False))
    expires_ms: int = Field(sa_column=_bigint(nullable=False))


class SchedulerWatermark(SQLModel, table=True):
    """How far an incremental job has read (e.g. the sessions' ``last_received_ms``)."""

    __tablename__ = "scheduler_watermark"

    job: str = Field(primary_key=True, max_length=64)
    value_ms: int = Field(sa_column=_bigint(nullable=False))


class Alert(SQLModel, table=True):
    """A budget threshold crossed (80, 90, 95, 100 % of the cap, or ``projected`` to exceed
    it): at most one per budget scope, period and threshold."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "scope",
            "name",
            "period",
            "period_start_ms",
            "threshold",
            name="uq_alert_once",
        ),
        Index("ix_alert_tenant_created", "tenant_id", "created_ms"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: int = Field(foreign_key="tenant.id")
    scope: str = Field(max_length=16)
    name: str = Field(max_length=200)
    period: str = Field(max_length=8)
    period_start_ms: int = Field(sa_column=_bigint(nullable=False))
    period_end_ms: int = Field(sa_column=_bigint(nullable=False))
    threshold: str = Field(max_length=16)  # "80", "90", "95", "100" or "projected"
    spent_picos: int = Field(sa_column=_bigint(nullable=False))
    cap_picos: int = Field(sa_column=_bigint(nullable=False))
    projected_picos: int | None = Field(default=None, sa_column=_bigint())
    created_ms: int = Field(sa_column=_bigint(nullable=False))


class Webhook(SQLModel, table=True):
    """A URL of the tenant's that receives each alert, signed with the webhook's secret."""

    __tablename__ = "webhook"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    url: str = Field(sa_column=Column(Text(), nullable=False))
    secret: str = Field(max_length=200)
    created_ms: int = Field(sa_column=_bigint(nullable=False))
    removed_ms: int | None = Field(default=None, sa_column=_bigint())


class WebhookDelivery(SQLModel, table=True):
    """One notification to one webhook, retried with exponential backoff until delivered or
    given up: its state is here, so a restart loses no pending delivery."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "alert_id", name="uq_webhook_delivery_once"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_ms"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: int = Field(foreign_key="tenant.id")
    webhook_id: str = Field(foreign_key="webhook.id", max_length=40)
    alert_id: str = Field(foreign_key="alert.id", max_length=40)
    body: str = Field(sa_column=Column(Text(), nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending, delivered, failed
    attempts: int = 0
    next_attempt_ms: int = Field(sa_column=_bigint(nullable=False))
    last_attempt_ms: int | None = Field(default=None, sa_column=_bigint())
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    delivered_ms: int | None = Field(default=None, sa_column=_bigint())
    created_ms: int = Field(sa_column=_bigint(nullable=False))


class Anomaly(SQLModel, table=True):
    """A session that cost far more than its employee's usual sessions: never blocked, queued
    for review. At most one per session."""

    __tablename__ = "anomaly"
    __table_args__ = (
        UniqueConstraint("tenant_id", "session", name="uq_anomaly_session"),
        Index("ix_anomaly_tenant_detected", "tenant_id", "detected_ms"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: int = Field(foreign_key="tenant.id")
    session: str = Field(max_length=200)
    employee: str = Field(max_length=200)
    department: str | None = Field(default=None, max_length=200)
    cost_picos: int = Field(sa_column=_bigint(nullable=False))
    baseline_picos: int = Field(sa_column=_bigint(nullable=False))
    baseline_sessions: int
    detected_ms: int = Field(sa_column=_bigint(nullable=False))
    status: str = Field(default="open", max_length=16)  # open, reviewed, dismissed
    note: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    reviewed_ms: int | None = Field(default=None, sa_column=_bigint())
    reviewed_by: str | None = Field(default=None, max_length=40)  # the API key's id


class Outcome(SQLModel, table=True):
    """The outcome of an event or of a whole session, with an optional quality score: the
    latest one reported for each event and each session."""

    __tablename__ = "outcome"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_outcome_event"),
        UniqueConstraint("tenant_id", "session", name="uq_outcome_session"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    tenant_id: int = Field(foreign_key="tenant.id")
    event_id: str | None = Field(default=None, max_length=64)  # exactly one of event_id
    session: str | None = Field(default=None, max_length=200)  # and session is set
    outcome: str = Field(max_length=16)
    quality_score: float | None = None  # 0 to 1
    task_type: str | None = Field(default=None, max_length=200)
    recorded_ms: int = Field(sa_column=_bigint(nullable=False))


class RoutingObservation(SQLModel, table=True):
    """Measured cost and outcomes of one task type on one model tier over a trailing window,
    recomputed by the scheduler."""

    __tablename__ = "routing_observation"
    __table_args__ = (
        UniqueConstraint("tenant_id", "task_type", "tier", name="uq_routing_observation"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    task_type: str = Field(max_length=200)
    tier: str = Field(max_length=16)  # economy, standard, premium, or unclassified
    models: str = Field(sa_column=Column(Text(), nullable=False))  # JSON {model: events}
    events: int = Field(sa_column=_bigint(nullable=False))
    priced_events: int = Field(sa_column=_bigint(nullable=False))
    cost_picos: int = Field(sa_column=_bigint(nullable=False))
    outcomes: int = Field(sa_column=_bigint(nullable=False))
    accepted: int = Field(sa_column=_bigint(nullable=False))
    scored_outcomes: int = Field(sa_column=_bigint(nullable=False))
    quality_sum: float = 0.0
    window_start_ms: int = Field(sa_column=_bigint(nullable=False))
    window_end_ms: int = Field(sa_column=_bigint(nullable=False))
    computed_ms: int = Field(sa_column=_bigint(nullable=False))


# == settlement (migration 0008) ==

Index(
    "ix_event_unsealed",
    EconomicEvent.__table__.c.tenant_id,  # type: ignore[attr-defined]
    EconomicEvent.__table__.c.session,  # type: ignore[attr-defined]
    EconomicEvent.__table__.c.received_ms,  # type: ignore[attr-defined]
    sqlite_where=text("receipt_id IS NULL"),
    postgresql_where=text("receipt_id IS NULL"),
)  # the events still waiting for a receipt: what the sealing job looks for


class Receipt(SQLModel, table=True):
    """A sealed receipt: the canonical JSON of its body, that body's SHA-256, and its place
    in the tenant's hash chain. Immutable once written (see :mod:`p402.settlement.receipts`);
    its settlement fields live in the batch tables, outside the hashed body."""

    __tablename__ = "receipt"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq", name="uq_receipt_tenant_seq"),
        Index("ix_receipt_tenant_sealed", "tenant_id", "sealed_ms"),
        Index("ix_receipt_tenant_session", "tenant_id", "session"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant_id: int = Field(foreign_key="tenant.id")
    seq: int = Field(sa_column=_bigint(nullable=False))
    """The receipt's number in the tenant's hash chain, from 1."""
    session: str | None = Field(default=None, max_length=200)
    part: int = 1
    """1 for a session's first receipt, n for its (n-1)-th continuation."""
    first_event_ms: int = Field(sa_column=_bigint(nullable=False))
    last_event_ms: int = Field(sa_column=_bigint(nullable=False))
    sealed_ms: int = Field(sa_column=_bigint(nullable=False))
    events: int = Field(sa_column=_bigint(nullable=False))
    body: str = Field(sa_column=Column(Text(), nullable=False))
    """The receipt's canonical bytes (RFC 8785 JSON), exactly as hashed."""
    receipt_hash: str = Field(max_length=64)
    previous_hash: str | None = Field(default=None, max_length=64)


class ReceiptLeaf(SQLModel, table=True):
    """One economic event as its receipt sealed it: the leaf's canonical JSON and hash, at its
    index in the receipt's event tree. Immutable, like the receipt."""

    __tablename__ = "receipt_leaf"
    __table_args__ = (Index("ix_receipt_leaf_event", "tenant_id", "event_id"),)

    receipt_id: str = Field(foreign_key="receipt.id", primary_key=True, max_length=64)
    leaf_index: int = Field(primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    event_id: str = Field(max_length=64)
    leaf_hash: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text(), nullable=False))


class SettlementBatch(SQLModel, table=True):
    """A batch of a tenant's receipt hashes, its RFC 6962 root, and where anchoring it stands:
    ``sealed`` → ``signed`` → ``broadcast`` → ``included`` → ``final`` (or ``failed`` /
    ``reorged``, then signed again). The signed transaction is kept before it is sent."""

    __tablename__ = "settlement_batch"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq", name="uq_settlement_batch_tenant_seq"),
        Index("ix_settlement_batch_state", "state"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: int = Field(foreign_key="tenant.id")
    seq: int = Field(sa_column=_bigint(nullable=False))
    state: str = Field(max_length=16)
    size: int
    root: str = Field(max_length=64)
    created_ms: int = Field(sa_column=_bigint(nullable=False))
    updated_ms: int = Field(sa_column=_bigint(nullable=False))
    chain_id: int | None = Field(default=None, sa_column=_bigint())
    submitter: str | None = Field(default=None, max_length=42)
    method: str | None = Field(default=None, max_length=16)
    nonce: int | None = Field(default=None, sa_column=_bigint())
    raw_tx: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    tx_hash: str | None = Field(default=None, max_length=66)
    block_number: int | None = Field(default=None, sa_column=_bigint())
    block_hash: str | None = Field(default=None, max_length=66)
    final_ms: int | None = Field(default=None, sa_column=_bigint())
    reanchors: int = 0
    superseded_tx: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    """Earlier transactions of the batch that can no longer land (JSON list of hashes)."""
    last_error: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))


def receipt_status(batch_state: str | None) -> str:
    """A sealed receipt's ``status``: ``anchored`` once its batch's anchor is final, else
    ``sealed``."""
    return "anchored" if batch_state == "final" else "sealed"


class SettlementLeaf(SQLModel, table=True):
    """A receipt's place in its batch: the leaf index of its hash in the batch's tree."""

    __tablename__ = "settlement_leaf"

    batch_id: str = Field(foreign_key="settlement_batch.id", primary_key=True, max_length=40)
    leaf_index: int = Field(primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    receipt_id: str = Field(foreign_key="receipt.id", unique=True, max_length=64)


# == imports (migration 0009) ==


IMPORT_SOURCE_FIELDS = ("api_key_id", "user_id", "project_id", "workspace_id")
"""The provider-side ids an import mapping can name, most specific first."""


class ImportMapping(SQLModel, table=True):
    """How a tenant attributes imported provider usage: a provider-side id (an OpenAI project,
    API key or user, an Anthropic workspace or API key) → department, project, employee."""

    __tablename__ = "import_mapping"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", "field", "value", name="uq_import_mapping"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    provider: str = Field(max_length=64)
    field: str = Field(max_length=32)  # one of IMPORT_SOURCE_FIELDS
    value: str = Field(max_length=200)
    department: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=200)
    employee: str | None = Field(default=None, max_length=200)


class ImportedUsage(SQLModel, table=True):
    """One result of a provider's usage or cost report (a time bucket and its group), with the
    provider's own figures. Not a metered event: reconciliation compares the two."""

    __tablename__ = "imported_usage"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", "natural_key", name="uq_imported_usage_key"),
        Index("ix_imported_usage_tenant_bucket", "tenant_id", "provider", "bucket_start_ms"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIG_ID, primary_key=True))
    tenant_id: int = Field(foreign_key="tenant.id")
    provider: str = Field(max_length=64)
    kind: str = Field(max_length=8)  # "usage" or "cost"
    natural_key: str = Field(max_length=64)
    """SHA-256 of the bucket and the result's group: the same result imported again is one."""
    bucket_start_ms: int = Field(sa_column=_bigint(nullable=False))
    bucket_end_ms: int = Field(sa_column=_bigint(nullable=False))
    model: str | None = Field(default=None, max_length=200)
    line_item: str | None = Field(default=None, max_length=300)
    provider_project_id: str | None = Field(default=None, max_length=200)
    provider_api_key_id: str | None = Field(default=None, max_length=200)
    provider_user_id: str | None = Field(default=None, max_length=200)
    provider_workspace_id: str | None = Field(default=None, max_length=200)
    input_tokens: int | None = Field(default=None, sa_column=_bigint())
    output_tokens: int | None = Field(default=None, sa_column=_bigint())
    cache_read_tokens: int | None = Field(default=None, sa_column=_bigint())
    cache_write_tokens: int | None = Field(default=None, sa_column=_bigint())
    requests: int | None = Field(default=None, sa_column=_bigint())
    cost_picos: int | None = Field(default=None, sa_column=_bigint())
    department: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=200)
    employee: str | None = Field(default=None, max_length=200)
    raw: str = Field(sa_column=Column(Text(), nullable=False))
    """The provider's result object as imported (canonical JSON)."""
    imported_ms: int = Field(sa_column=_bigint(nullable=False))


# == query rollups (migration 0010) ==

Index(
    "ix_event_tenant_outcome_time",
    EconomicEvent.__table__.c.tenant_id,  # type: ignore[attr-defined]
    EconomicEvent.__table__.c.ts_ms,  # type: ignore[attr-defined]
    sqlite_where=text("outcome IS NOT NULL"),
    postgresql_where=text("outcome IS NOT NULL"),
)  # the events that have an outcome: what drift compares outcomes of, without a window scan


PROJECT_ROLLUP_DIMENSIONS = ("department", "project", "client", "provider", "model")
"""The dimensions of the project rollup: the spend rollup's but the employee."""


class ProjectSpendRollup(SQLModel, table=True):
    """Spend per tenant, UTC day, project (with its department and client), provider and
    model: the spend rollup without employees, a few hundred rows a day where the spend
    rollup has thousands, for the organisation-wide questions (department, project, model,
    provider). Kept by the same ingest statements as the spend rollup."""

    __tablename__ = "project_spend_rollup"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "day", *PROJECT_ROLLUP_DIMENSIONS, name="uq_project_spend_rollup_key"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    day: int  # days since 1970-01-01, UTC
    department: str = Field(default="", max_length=200)
    project: str = Field(default="", max_length=200)
    client: str = Field(default="", max_length=200)
    provider: str = Field(default="", max_length=64)
    model: str = Field(default="", max_length=200)
    cost_picos: int = Field(default=0, sa_column=_bigint(nullable=False))
    events: int = Field(default=0, sa_column=_bigint(nullable=False))
    input_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    output_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    unpriced_events: int = Field(default=0, sa_column=_bigint(nullable=False))


class ProjectSpendRollupHourly(SQLModel, table=True):
    """The project rollup per UTC hour: what answers the part of a day at either end of a
    range that does not begin or end at midnight, so that only minutes are read from the
    events. Kept by the same ingest statements as the other rollups."""

    __tablename__ = "project_spend_rollup_hourly"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "hour",
            *PROJECT_ROLLUP_DIMENSIONS,
            name="uq_project_spend_rollup_hourly_key",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    hour: int  # hours since 1970-01-01 00:00 UTC
    department: str = Field(default="", max_length=200)
    project: str = Field(default="", max_length=200)
    client: str = Field(default="", max_length=200)
    provider: str = Field(default="", max_length=64)
    model: str = Field(default="", max_length=200)
    cost_picos: int = Field(default=0, sa_column=_bigint(nullable=False))
    events: int = Field(default=0, sa_column=_bigint(nullable=False))
    input_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    output_tokens: int = Field(default=0, sa_column=_bigint(nullable=False))
    unpriced_events: int = Field(default=0, sa_column=_bigint(nullable=False))
