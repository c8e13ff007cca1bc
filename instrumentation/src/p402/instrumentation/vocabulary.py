"""The names P402 speaks: span attribute keys and the values they may take, and the names its
API and command line answer to (roles, headers, filters, formats).

This is the one place that spells them. Standard OpenTelemetry GenAI semantic-convention
names are used where they exist; the ``p402.*`` names extend them for attribution, evidence
and policy. Every P402 package imports its names from here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- standard GenAI semantic conventions -------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # the older name of gen_ai.provider.name
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
ERROR_TYPE: Final = "error.type"

# Names other instrumentations use (older semantic conventions, OpenLLMetry), read by the
# receiver as aliases of the names above.
LEGACY_USAGE_NAMES: Final = {
    GEN_AI_USAGE_INPUT_TOKENS: ("gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens"),
    GEN_AI_USAGE_OUTPUT_TOKENS: ("gen_ai.usage.completion_tokens", "llm.usage.completion_tokens"),
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: ("gen_ai.usage.cache_read_input_tokens",),
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: ("gen_ai.usage.reasoning_tokens",),
}
PROVIDER_NAME_ALIASES: Final = {
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
}
"""Other spellings of ``gen_ai.provider.name`` / ``gen_ai.system`` values (lower-cased)."""

# --- P402 ---------------------------------------------------------------------------------
P402_EVENT_ID: Final = "p402.event.id"
P402_PRICE_VERSION: Final = "p402.price.version"
P402_USAGE_EVIDENCE: Final = "p402.usage.evidence"
P402_COST_EVIDENCE: Final = "p402.cost.evidence"
P402_POLICY_RESULT: Final = "p402.policy.result"
P402_POLICY_REASON: Final = "p402.policy.reason"
P402_MODEL_ORIGINAL: Final = "p402.model.original"
P402_PRIVACY_MODE: Final = "p402.privacy.mode"
P402_CONTENT_FINGERPRINT_INPUT: Final = "p402.content.fingerprint.input"
P402_CONTENT_FINGERPRINT_OUTPUT: Final = "p402.content.fingerprint.output"
P402_ATTEMPT: Final = "p402.attempt"
P402_EVENT_SIGNATURE: Final = "p402.event.signature"


class Role(StrEnum):
    """What an API key may do: send events, query, or everything (keys included)."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return self is Role.ADMIN or self is needed


API_KEY_HEADER: Final = "x-p402-api-key"
"""The HTTP header that carries a P402 API key (``Authorization: Bearer`` works too)."""
TOTAL_EVENTS_HEADER: Final = "x-p402-total-events"
"""The header of ``GET /v1/export`` answers: how many events the export holds."""
EXPORT_FORMATS: Final = ("csv", "bundle", "focus")
"""The ``format`` of ``GET /v1/export`` (and ``p402 export``)."""
EXPORT_MEDIA_TYPES: Final = {"csv": "text/csv", "bundle": "application/zip", "focus": "text/csv"}
"""The media type of an export in each format."""

OWNER_DIMENSIONS: Final = (
    "department",
    "project",
    "client",
    "employee",
    "session",
    "workflow",
    "feature",
    "customer",
    "task_type",
)
"""The owner dimensions, in the order the API lists them."""
EVENT_FILTERS: Final = (
    *OWNER_DIMENSIONS,
    "model",
    "model_requested",
    "provider",
    "operation",
    "outcome",
    "usage_evidence",
    "cost_evidence",
    "evidence_status",
    "policy_result",
    "privacy_mode",
)
"""The query parameters that select events by equality (``GET /v1/events``, exports,
``p402 export --filter``)."""

OWNER_ATTRIBUTE_PREFIX: Final = "p402.owner."


def owner_attribute(dimension: str) -> str:
    """The span attribute that carries one owner dimension, e.g. ``p402.owner.department``."""
    return OWNER_ATTRIBUTE_PREFIX + dimension


COST_CURRENCY_USD: Final = "USD"


class CostSource(StrEnum):
    """Who produced ``gen_ai.usage.cost.amount``."""

    PROVIDER = "provider"
    LOCAL = "local"


class UsageEvidence(StrEnum):
    """How the token usage of an event was obtained."""

    PROVIDER_RESPONSE = "provider_response"
    STREAM_FINAL = "stream_final"
    STREAM_INCOMPLETE = "stream_incomplete"
    ESTIMATED = "estimated"
    MISSING = "missing"


class CostEvidence(StrEnum):
    """How the cost of an event was obtained. ``unpriced`` events carry no cost, never 0."""

    PROVIDER_REPORTED = "provider_reported"
    COMPUTED = "computed"
    UNPRICED = "unpriced"


class EvidenceStatus(StrEnum):
    """How far an event's evidence has come: ``pending`` until its session receipt is
    sealed, then ``sealed``, then ``anchored`` once the receipt's batch is final on chain."""

    PENDING = "pending"
    SEALED = "sealed"
    ANCHORED = "anchored"


class PolicyResult(StrEnum):
    """The pre-call policy decision."""

    ALLOWED = "allowed"
    DOWNGRADED = "downgraded"
    BLOCKED = "blocked"
    FLAGGED = "flagged"


class Outcome(StrEnum):
    """What became of a call's (or a session's) work, as the application reports it."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVISED = "revised"
    ESCALATED = "escalated"
    FAILED = "failed"


class PrivacyMode(StrEnum):
    """How much of an exchange's content may leave the process, from least to most."""

    METADATA_ONLY = "metadata_only"
    FINGERPRINT_ONLY = "fingerprint_only"
    REDACTED_TRACE = "redacted_trace"
    PRIVATE_GATEWAY = "private_gateway"
    FULL_TRACE = "full_trace"

    @property
    def rank(self) -> int:
        return _PRIVACY_ORDER.index(self)


_PRIVACY_ORDER: Final = tuple(PrivacyMode)


class Operation(StrEnum):
    """``gen_ai.operation.name`` values P402 produces."""

    CHAT = "chat"
    TEXT_COMPLETION = "text_completion"
    EMBEDDINGS = "embeddings"
    GENERATE_CONTENT = "generate_content"


class ApiFormat(StrEnum):
    """The wire formats P402 can read. OpenAI-compatible gateways speak ``openai``."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


# --- budgets and policies -----------------------------------------------------------------


class BudgetScope(StrEnum):
    """What a budget caps: the whole organisation, or one department, project, employee or
    session (named by the budget's ``name``)."""

    ORGANIZATION = "organization"
    DEPARTMENT = "department"
    PROJECT = "project"
    EMPLOYEE = "employee"
    SESSION = "session"


class BudgetPeriod(StrEnum):
    """The UTC calendar period a budget's cap applies to: month, ISO week (from Monday), day."""

    MONTH = "month"
    WEEK = "week"
    DAY = "day"


class CapAction(StrEnum):
    """What happens to a call that would take a budget past its cap."""

    BLOCK = "block"
    DOWNGRADE = "downgrade"
    NOTIFY = "notify"


class BudgetStatus(StrEnum):
    """Where a budget stands in its period: ``warning`` from 80 % of the cap, ``exceeded``
    from 100 %, ``projected_over`` when the end-of-period projection passes the cap."""

    OK = "ok"
    WARNING = "warning"
    PROJECTED_OVER = "projected_over"
    EXCEEDED = "exceeded"


class RoutingPreference(StrEnum):
    """A department policy's routing preference."""

    QUALITY_FIRST = "quality-first"
    COST_FIRST = "cost-first"
    COMPLIANCE_AWARE = "compliance-aware"


class PolicyDecision(StrEnum):
    """The pre-call decision: send the call as asked, with another model, or not at all."""

    ALLOW = "allow"
    DOWNGRADE = "downgrade"
    BLOCK = "block"
