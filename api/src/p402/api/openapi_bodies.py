"""The request bodies of ``/schema``, for the routes that read their body themselves (raw bytes
for OTLP, size limits, checks of their own) or whose parameter type says less than the route
accepts: one schema per body, spelled with the vocabulary and limits the handlers check
against, and put into the route's OpenAPI operation by its ``operation_class``::

    @post("/v1/events", operation_class=METER_EVENTS.operation_class,
          responses=METER_EVENTS.responses)

The handlers read and validate their bodies as before: this module only documents them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, Final

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from p402.api.errors import ErrorBody
from p402.instrumentation.privacy import TENANT_KEY
from p402.instrumentation.tiers import ModelTier
from p402.instrumentation.vocabulary import (
    OWNER_DIMENSIONS,
    BudgetPeriod,
    BudgetScope,
    CapAction,
    CostEvidence,
    Outcome,
    PolicyResult,
    PrivacyMode,
    RoutingPreference,
    UsageEvidence,
)
from p402.ledger.keys import Role
from p402.ledger.models import IMPORT_SOURCE_FIELDS
from p402.ledger.outcomes import MAX_OUTCOMES
from p402.ledger.price_overrides import MAX_PRICE_OVERRIDES
from p402.ledger.provider_csv import CSV_MEDIA_TYPE
from p402.ledger.provider_reports import MAX_COUNT, MAX_UNIX_SECONDS, PROVIDERS
from p402.ledger.redaction import MAX_PATTERN_LENGTH, MAX_PATTERNS
from p402.ledger.settings import MAX_TIER_OVERRIDES, ROTATE
from p402.ledger.webhooks import MAX_WEBHOOKS, MIN_SECRET_LENGTH
from p402.receiver.conversion import MAX_EVENT_ID_LENGTH, MAX_EVENT_USD, MAX_TOKENS
from p402.receiver.ingest import JSON, PROTOBUF
from p402.receiver.meter_events import MAX_EVENTS, READ_ONLY_FIELDS, TRACE_CONTEXT
from p402.receiver.otlp import MAX_VALUE_NESTING

__all__ = [
    "AUTHORIZATION",
    "BUDGETS",
    "IMPORT_MAPPING",
    "KEY",
    "METER_EVENTS",
    "OTLP_TRACES",
    "OUTCOMES",
    "POLICIES",
    "PROVIDER_REPORT",
    "SETTINGS",
    "TOO_LARGE",
    "WEBHOOKS",
    "DocumentedBody",
    "error_responses",
]

_NAME_LENGTH: Final = 200
"""The longest name (of a model, department, budget, …) the ledger keeps."""

TOO_LARGE: Final = {413: "The body is larger than the route accepts"}
_NOT_READ: Final = {415: "The body's Content-Type is not one the route reads"}


def error_responses(errors: Mapping[int, str]) -> dict[int, ResponseSpec]:
    """A route's ``responses`` for these errors (status → what it means), in the one error
    shape."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=description, generate_examples=False
        )
        for status, description in errors.items()
    }


# --- schema building blocks ----------------------------------------------------------------
# Alternatives are ``anyOf`` unless exactly one must hold: where they exclude each other anyway,
# ``anyOf`` says the same and is much cheaper for a generator (Schemathesis) to satisfy.


def _text(
    max_length: int = _NAME_LENGTH,
    *,
    min_length: int = 0,
    blank: bool = True,
    description: str | None = None,
) -> Schema:
    """A string the ledger can store (no NUL character); not only white space unless
    ``blank``."""
    return Schema(
        type=OpenAPIType.STRING,
        min_length=min_length or (None if blank else 1),
        max_length=max_length,
        pattern="^[^\\u0000]*$" if blank else "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
        description=description,
    )


def _nullable(schema: Schema) -> Schema:
    return Schema(
        any_of=[replace(schema, description=None), Schema(type=OpenAPIType.NULL)],
        description=schema.description,
    )


def _choice(kind: type[StrEnum] | Sequence[str], description: str | None = None) -> Schema:
    return Schema(
        type=OpenAPIType.STRING, enum=[str(value) for value in kind], description=description
    )


def _count(maximum: int = MAX_TOKENS, description: str | None = None) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=maximum, description=description)


def _amount(description: str) -> Schema:
    """A non-negative amount of USD: a decimal string (an integer is read too, never a float)."""
    return Schema(
        any_of=[
            Schema(type=OpenAPIType.STRING, pattern="^[0-9]+(\\.[0-9]+)?$"),
            Schema(type=OpenAPIType.INTEGER, minimum=0),
        ],
        description=description,
    )


def _moment(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME, description=description)


def _object(
    properties: Mapping[str, Schema],
    *,
    required: Sequence[str] = (),
    closed: bool = True,
    description: str | None = None,
    **constraints: Any,
) -> Schema:
    """An object with these properties; ``closed``: the handler refuses any other field."""
    return Schema(
        type=OpenAPIType.OBJECT,
        properties=dict(properties),
        required=list(required) or None,
        additional_properties=False if closed else None,
        description=description,
        **constraints,
    )


def _list(items: Schema, *, max_items: int | None = None, min_items: int | None = None) -> Schema:
    return Schema(type=OpenAPIType.ARRAY, items=items, max_items=max_items, min_items=min_items)


def _one_or_list(item: Schema, what: str) -> Schema:
    return Schema(any_of=[item, _list(item)], description=f"one {what}, or a JSON list of them")


def _required(*names: str) -> Schema:
    return Schema(required=list(names))


# --- the documented body and its operation ------------------------------------------------


@dataclass(frozen=True)
class DocumentedBody:
    """A route's request body for ``/schema``, with the errors it answers besides the 400,
    401 and 403 every route with a key documents."""

    content: Mapping[str, Schema]
    """The body's schema under each media type the route reads."""
    description: str
    errors: Mapping[int, str] = field(default_factory=lambda: dict(TOO_LARGE))
    """The other errors the route answers, by status, with what each means."""
    answer: Mapping[str, Schema] | None = None
    """The 200 answer's schema per media type, where it follows the request's."""
    path_choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """The values a path parameter may take (others answer 404)."""

    @property
    def request_body(self) -> RequestBody:
        return RequestBody(
            content={
                media_type: OpenAPIMediaType(schema=schema)
                for media_type, schema in self.content.items()
            },
            description=self.description,
            required=True,
        )

    @property
    def responses(self) -> dict[int, ResponseSpec]:
        """The route's ``responses``: its errors, in the one error shape."""
        return error_responses(self.errors)

    @cached_property
    def operation_class(self) -> type[Operation]:
        """The route's ``operation_class``: its operation with this request body."""
        documented = self

        @dataclass
        class DocumentedOperation(Operation):
            def __post_init__(self) -> None:
                self.request_body = documented.request_body
                documented._document_answer(self)
                documented._document_path_choices(self)

        return DocumentedOperation

    def _document_answer(self, operation: Operation) -> None:
        ok = (operation.responses or {}).get("200")
        if self.answer is not None and isinstance(ok, OpenAPIResponse):
            ok.content = {
                media_type: OpenAPIMediaType(schema=schema)
                for media_type, schema in self.answer.items()
            }

    def _document_path_choices(self, operation: Operation) -> None:
        for parameter in operation.parameters or ():
            if isinstance(parameter, Parameter) and parameter.name in self.path_choices:
                parameter.schema = _choice(self.path_choices[parameter.name])


# --- POST /v1/traces -----------------------------------------------------------------------

_UINT64 = Schema(
    any_of=[
        Schema(type=OpenAPIType.STRING, pattern="^[0-9]{1,20}$"),
        Schema(type=OpenAPIType.INTEGER, minimum=0),
    ],
    description="an unsigned 64-bit integer (OTLP/JSON writes it as a decimal string)",
)
_UINT32 = Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=2**32 - 1)


def _hex_id(digits: int) -> Schema:
    return Schema(
        type=OpenAPIType.STRING,
        pattern=f"^([0-9a-fA-F]{{{digits}}})?$",
        description=f"{digits} hex digits (not base64); empty or absent for none",
    )


_ANY_VALUE = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "stringValue": Schema(type=OpenAPIType.STRING),
        "boolValue": Schema(type=OpenAPIType.BOOLEAN),
        "intValue": Schema(
            any_of=[
                Schema(type=OpenAPIType.STRING, pattern="^-?[0-9]{1,19}$"),
                Schema(type=OpenAPIType.INTEGER, minimum=-(2**63), maximum=2**63 - 1),
            ]
        ),
        "doubleValue": Schema(type=[OpenAPIType.NUMBER, OpenAPIType.STRING]),
        "bytesValue": Schema(type=OpenAPIType.STRING, description="base64"),
        "arrayValue": Schema(type=OpenAPIType.OBJECT, description="``{values: [AnyValue]}``"),
        "kvlistValue": Schema(type=OpenAPIType.OBJECT, description="``{values: [KeyValue]}``"),
    },
    max_properties=1,
    description=f"one value; arrays and key-value lists nest at most {MAX_VALUE_NESTING} deep",
)
_ATTRIBUTES = _list(
    _object(
        {"key": Schema(type=OpenAPIType.STRING), "value": _ANY_VALUE},
        closed=False,
        description="a KeyValue",
    )
)
_SPAN_KIND = Schema(
    any_of=[
        Schema(type=OpenAPIType.INTEGER, minimum=-(2**31), maximum=2**31 - 1),
        _choice(
            [
                "SPAN_KIND_UNSPECIFIED",
                "SPAN_KIND_INTERNAL",
                "SPAN_KIND_SERVER",
                "SPAN_KIND_CLIENT",
                "SPAN_KIND_PRODUCER",
                "SPAN_KIND_CONSUMER",
            ]
        ),
    ]
)
_SPAN = _object(
    {
        "traceId": _hex_id(32),
        "spanId": _hex_id(16),
        "parentSpanId": _hex_id(16),
        "traceState": Schema(type=OpenAPIType.STRING),
        "name": Schema(type=OpenAPIType.STRING),
        "kind": _SPAN_KIND,
        "startTimeUnixNano": _UINT64,
        "endTimeUnixNano": _UINT64,
        "attributes": _ATTRIBUTES,
        "droppedAttributesCount": _UINT32,
        "droppedEventsCount": _UINT32,
        "droppedLinksCount": _UINT32,
        "flags": _UINT32,
        "events": _list(Schema(type=OpenAPIType.OBJECT, description="a Span.Event")),
        "links": _list(Schema(type=OpenAPIType.OBJECT, description="a Span.Link")),
        "status": _object(
            {
                "message": Schema(type=OpenAPIType.STRING),
                "code": Schema(
                    any_of=[
                        Schema(type=OpenAPIType.INTEGER, minimum=-(2**31), maximum=2**31 - 1),
                        _choice(["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]),
                    ]
                ),
            },
            closed=False,
        ),
    },
    closed=False,
    description="a Span: an economic event when it carries p402.event.id, or a GenAI span",
)
_EXPORT_TRACE_SERVICE_REQUEST = _object(
    {
        "resourceSpans": _list(
            _object(
                {
                    "resource": _object({"attributes": _ATTRIBUTES}, closed=False),
                    "schemaUrl": Schema(type=OpenAPIType.STRING),
                    "scopeSpans": _list(
                        _object(
                            {
                                "scope": _object(
                                    {
                                        "name": Schema(type=OpenAPIType.STRING),
                                        "version": Schema(type=OpenAPIType.STRING),
                                        "attributes": _ATTRIBUTES,
                                    },
                                    closed=False,
                                ),
                                "schemaUrl": Schema(type=OpenAPIType.STRING),
                                "spans": _list(_SPAN),
                            },
                            closed=False,
                        )
                    ),
                },
                closed=False,
            )
        )
    },
    closed=False,
    description=(
        "An OTLP/JSON ExportTraceServiceRequest (field names in lowerCamelCase; the "
        "snake_case names are read too, and unknown fields are ignored)"
    ),
)
_PROTOBUF_BYTES = Schema(
    type=OpenAPIType.STRING,
    format=OpenAPIFormat.BINARY,
    description=(
        "A binary protobuf ExportTraceServiceRequest (opentelemetry.proto.collector.trace.v1)"
    ),
)

OTLP_TRACES: Final = DocumentedBody(
    content={PROTOBUF: _PROTOBUF_BYTES, JSON: _EXPORT_TRACE_SERVICE_REQUEST},
    description=(
        "An OTLP/HTTP trace export, in binary protobuf or OTLP/JSON, optionally gzip-compressed "
        "(``Content-Encoding: gzip``). Spans that are not LLM calls are ignored and counted; "
        "invalid LLM spans are rejected in ``partial_success``. The answer's headers count "
        "the spans: ``x-p402-spans-accepted`` (LLM spans), ``x-p402-events-inserted`` (of "
        "them, events not stored before), ``x-p402-spans-ignored`` and "
        "``x-p402-spans-rejected``."
    ),
    errors={
        413: "The body, or the gzip body decompressed, is larger than the route accepts",
        415: "The Content-Type is neither protobuf nor JSON, or the Content-Encoding not gzip",
    },
    answer={
        PROTOBUF: Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.BINARY,
            description="A binary protobuf ExportTraceServiceResponse",
        ),
        JSON: _object(
            {
                "partialSuccess": _object(
                    {
                        "rejectedSpans": Schema(type=OpenAPIType.STRING, pattern="^[0-9]+$"),
                        "errorMessage": Schema(type=OpenAPIType.STRING),
                    },
                    required=["rejectedSpans"],
                )
            },
            description="An OTLP/JSON ExportTraceServiceResponse: ``{}`` when every span was kept",
        ),
    },
)

# --- POST /v1/events -----------------------------------------------------------------------

_MODEL = _text(description="a model name")
_METER_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "id": _text(
            MAX_EVENT_ID_LENGTH, blank=False, description="the p402.event.id: the idempotency key"
        ),
        "timestamp": _moment("when the call was made (may lie in the past)"),
        "provider": _nullable(_text(64)),
        "operation": _nullable(_text(32, description="e.g. chat (the default), embeddings")),
        "model_requested": _text(min_length=1, description="the model asked for"),
        "model_used": _text(min_length=1, description="the model that answered"),
        "model_original": _nullable(_MODEL),
        **{
            name: _nullable(_count())
            for name in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "reasoning_tokens",
            )
        },
        "cost_usd": _nullable(
            _amount(
                f"the call's cost in USD, below {MAX_EVENT_USD}; computed by the receiver "
                "when absent"
            )
        ),
        "cost_evidence": _nullable(
            _choice(CostEvidence, "provider_reported: cost_usd is the provider's figure")
        ),
        "usage_evidence": _nullable(_choice(UsageEvidence)),
        "policy_result": _nullable(_choice(PolicyResult)),
        "policy_reason": _nullable(_text(4000)),
        "privacy_mode": _nullable(_choice(PrivacyMode)),
        "response_id": _nullable(_text()),
        "attempt": _nullable(_count(description="0 for the first attempt, n for the n-th retry")),
        "status_code": _nullable(Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=999)),
        "outcome": _nullable(_choice(Outcome)),
        **{
            name: _nullable(
                Schema(
                    type=OpenAPIType.STRING,
                    pattern=f"^[0-9a-f]{{{digits}}}$",
                    description="the call's span (with its pair, or neither), lowercase hex",
                )
            )
            for name, digits in TRACE_CONTEXT.items()
        },
        **{dimension: _nullable(_text()) for dimension in OWNER_DIMENSIONS},
        **{
            name: Schema(description="read-only in the ledger: accepted and ignored")
            for name in READ_ONLY_FIELDS
        },
    },
    required=["id", "timestamp"],
    any_of=[_required("model_used"), _required("model_requested")],
    additional_properties=False,
    description="A meter-only event, with the field names of GET /v1/events; null is absent",
)

METER_EVENTS: Final = DocumentedBody(
    content={JSON: _list(_METER_EVENT, max_items=MAX_EVENTS)},
    description=(
        "A JSON list of meter-only events, stored all or nothing; an ``id`` already in the "
        "ledger counts once"
    ),
    errors={**TOO_LARGE, **_NOT_READ},
)

# --- POST /v1/outcomes ---------------------------------------------------------------------

OUTCOMES: Final = DocumentedBody(
    content={
        JSON: _list(
            Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "event_id": _text(MAX_EVENT_ID_LENGTH, blank=False),
                    "session": _text(blank=False),
                    "outcome": _choice(Outcome),
                    "quality_score": _nullable(
                        Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1)
                    ),
                    "task_type": _nullable(_text(blank=False)),
                },
                required=["outcome"],
                one_of=[_required("event_id"), _required("session")],
                additional_properties=False,
                description="An outcome of one event (event_id) or of a whole session",
            ),
            min_items=1,
            max_items=MAX_OUTCOMES,
        )
    },
    description="A non-empty JSON list of outcomes, stored all or nothing",
    errors={
        404: "Outcomes name events or sessions the tenant does not have; nothing was written",
        **TOO_LARGE,
        **_NOT_READ,
    },
)

# --- PUT /v1/budgets and PUT /v1/policies --------------------------------------------------

_NAMED_SCOPES: Final = [
    scope.value for scope in BudgetScope if scope is not BudgetScope.ORGANIZATION
]
_BUDGET = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "scope": _choice(BudgetScope),
        "name": _nullable(_text(description="the department, project, employee or session")),
        "period": _nullable(_choice(BudgetPeriod, "the UTC calendar period (default: month)")),
        "cap_usd": _amount("the cap in USD"),
        "action_at_cap": _nullable(_choice(CapAction, "default: notify")),
        "downgrade_model": _nullable(_text(description="required to downgrade")),
    },
    required=["scope", "cap_usd"],
    all_of=[
        Schema(  # an organisation budget has no name; any other names what it caps
            any_of=[
                Schema(
                    properties={
                        "scope": Schema(const=BudgetScope.ORGANIZATION.value),
                        "name": Schema(enum=["", None]),
                    }
                ),
                Schema(
                    properties={
                        "scope": Schema(enum=_NAMED_SCOPES),
                        "name": Schema(type=OpenAPIType.STRING, min_length=1),
                    },
                    required=["name"],
                ),
            ]
        ),
        Schema(  # a budget that downgrades names the model it downgrades to
            any_of=[
                Schema(
                    properties={
                        "action_at_cap": Schema(schema_not=Schema(const=CapAction.DOWNGRADE.value))
                    }
                ),
                Schema(
                    properties={"downgrade_model": Schema(type=OpenAPIType.STRING, min_length=1)},
                    required=["downgrade_model"],
                ),
            ]
        ),
    ],
    additional_properties=False,
    description="A budget, created or replaced by (scope, name, period)",
)

BUDGETS: Final = DocumentedBody(
    content={JSON: _one_or_list(_BUDGET, "budget")},
    description="The budgets to create or replace, written all or nothing",
)

_POLICY = _object(
    {
        "department": _text(min_length=1),
        "min_model": _nullable(_text(description="a model of the lowest tier allowed")),
        "max_model": _nullable(_text(description="a model of the highest tier allowed")),
        "routing": _nullable(_choice(RoutingPreference, "default: quality-first")),
    },
    required=["department"],
    description="A department's policy; its models must have a known tier",
)

POLICIES: Final = DocumentedBody(
    content={JSON: _one_or_list(_POLICY, "policy")},
    description="The department policies to create or replace",
)

# --- POST /v1/authorize --------------------------------------------------------------------

AUTHORIZATION: Final = DocumentedBody(
    content={
        JSON: _object(
            {
                "event_id": _text(
                    MAX_EVENT_ID_LENGTH,
                    min_length=1,
                    description="the p402.event.id the call's event will carry",
                ),
                "model": _text(min_length=1),
                "provider": _nullable(_text(min_length=1)),
                "owner": _nullable(
                    _object(
                        {dimension: _text() for dimension in OWNER_DIMENSIONS},
                        description="the call's owner dimensions → names",
                    )
                ),
                "max_cost_usd": _amount("the most the call may cost, in USD"),
                "max_input_tokens": _count(),
                "max_output_tokens": _count(),
            },
            required=["event_id", "model"],
            any_of=[
                _required("max_cost_usd"),
                _required("max_input_tokens"),
                _required("max_output_tokens"),
            ],
            description="A call to decide before it is sent, with its bound",
        )
    },
    description="The call to authorize and hold the maximum cost of",
)

# --- PUT /v1/webhooks and PUT /v1/settings -------------------------------------------------

_WEBHOOKS = _list(
    _object(
        {
            "url": Schema(
                type=OpenAPIType.STRING,
                pattern="^[hH][tT][tT][pP][sS]?://[^/?#@:\\u0000][^\\u0000]*$",
                max_length=2000,
                description="an http:// or https:// URL; each URL once",
            ),
            "secret": _nullable(
                Schema(
                    type=OpenAPIType.STRING,
                    min_length=MIN_SECRET_LENGTH,
                    max_length=200,
                    description="the HMAC secret (generated when absent)",
                )
            ),
        },
        required=["url"],
    ),
    max_items=MAX_WEBHOOKS,
)

WEBHOOKS: Final = DocumentedBody(
    content={JSON: _WEBHOOKS},
    description="The tenant's whole list of webhooks: a URL left out is removed",
)

_PRICE_OVERRIDE = _object(
    {
        "model": _text(min_length=1),
        "provider": _nullable(_text(64, min_length=1)),
        "input_per_mtok": _amount("USD per million input tokens"),
        "output_per_mtok": _amount("USD per million output tokens"),
        "cache_read_per_mtok": _nullable(_amount("USD per million cache-read tokens")),
        "cache_write_per_mtok": _nullable(_amount("USD per million cache-write tokens")),
        "valid_from": _nullable(_moment("from when the rate applies")),
        "valid_to": _nullable(_moment("until when the rate applies (after valid_from)")),
    },
    required=["model", "input_per_mtok", "output_per_mtok"],
    description="A negotiated rate",
)

SETTINGS: Final = DocumentedBody(
    content={
        JSON: _object(
            {
                "max_privacy_mode": _choice(PrivacyMode),
                "fingerprint_key": Schema(
                    any_of=[
                        Schema(const=ROTATE),
                        Schema(type=OpenAPIType.STRING, pattern=f"^{TENANT_KEY.pattern}$"),
                    ],
                    description=f'"{ROTATE}" for a new key, or a key of 64 hex digits',
                ),
                "signing_key": Schema(
                    any_of=[
                        Schema(const=ROTATE),
                        Schema(type=OpenAPIType.STRING, pattern=f"^{TENANT_KEY.pattern}$"),
                        Schema(type=OpenAPIType.NULL),
                    ],
                    description=(
                        f'"{ROTATE}" for a new key, a key of 64 hex digits, or null to remove '
                        "it: a key private_gateway events may be signed with"
                    ),
                ),
                "redact_patterns": _list(
                    Schema(
                        type=OpenAPIType.STRING,
                        min_length=1,
                        max_length=MAX_PATTERN_LENGTH,
                        description="an RE2 regular expression (no backreferences, no lookaround)",
                    ),
                    max_items=MAX_PATTERNS,
                ),
                "price_overrides": _list(_PRICE_OVERRIDE, max_items=MAX_PRICE_OVERRIDES),
                "model_tiers": Schema(
                    type=OpenAPIType.OBJECT,
                    additional_properties=_nullable(_choice(ModelTier)),
                    property_names=Schema(min_length=1, max_length=_NAME_LENGTH),
                    max_properties=MAX_TIER_OVERRIDES,
                    description="model → its tier, or null to remove the model's override",
                ),
                "webhooks": _WEBHOOKS,
            },
            description="The settings to change, by name; those left out stay as they are",
        )
    },
    description="The settings to change, all or nothing",
    errors={**TOO_LARGE, 422: "A setting is invalid; nothing was written"},
)

# --- POST /v1/keys -------------------------------------------------------------------------

KEY: Final = DocumentedBody(
    content={
        JSON: _object(
            {
                "role": _choice(Role),
                "tenant": _nullable(
                    Schema(type=OpenAPIType.STRING, description="the caller's own (the default)")
                ),
            },
            required=["role"],
            closed=False,
        )
    },
    description="The key to create, for the caller's tenant",
    errors={
        403: "The key is not an admin key, or the tenant is not the caller's",
        **TOO_LARGE,
    },
)

# --- POST /v1/imports/{provider} and PUT /v1/imports/mappings ------------------------------

_GROUP_ID = _nullable(_text())
_LINE_ITEM = _nullable(_text(300))
_UNIX_SECONDS = Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_UNIX_SECONDS)


def _report_page(bucket: Schema) -> Schema:
    return _object(
        {"data": _list(bucket)},
        required=["data"],
        closed=False,
        description="one page of the report, as the provider's Admin API answers it",
    )


_OPENAI_BUCKET = _object(
    {
        "start_time": _UNIX_SECONDS,
        "end_time": _UNIX_SECONDS,
        "results": _list(
            Schema(
                any_of=[
                    _object(
                        {
                            "object": _choice(
                                [
                                    "organization.usage.completions.result",
                                    "organization.usage.embeddings.result",
                                ]
                            ),
                            **{
                                name: _nullable(_count(MAX_COUNT))
                                for name in (
                                    "input_tokens",
                                    "output_tokens",
                                    "input_cached_tokens",
                                    "num_model_requests",
                                )
                            },
                            **{
                                name: _GROUP_ID
                                for name in ("model", "project_id", "api_key_id", "user_id")
                            },
                        },
                        required=["object"],
                        closed=False,
                        description="a usage result",
                    ),
                    _object(
                        {
                            "object": Schema(const="organization.costs.result"),
                            "amount": _object(
                                {
                                    "value": Schema(
                                        type=[OpenAPIType.NUMBER, OpenAPIType.STRING],
                                        description="in the currency's units",
                                    ),
                                    "currency": Schema(
                                        type=OpenAPIType.STRING, pattern="^[uU][sS][dD]$"
                                    ),
                                },
                                required=["value", "currency"],
                                closed=False,
                            ),
                            "line_item": _LINE_ITEM,
                            "project_id": _GROUP_ID,
                        },
                        required=["object", "amount"],
                        closed=False,
                        description="a cost result",
                    ),
                ]
            )
        ),
    },
    required=["start_time", "end_time", "results"],
    closed=False,
)
_ANTHROPIC_BUCKET = _object(
    {
        "starting_at": _moment("RFC 3339"),
        "ending_at": _moment("RFC 3339"),
        "results": _list(
            Schema(
                any_of=[
                    _object(
                        {
                            "uncached_input_tokens": _nullable(_count(MAX_COUNT)),
                            "cache_read_input_tokens": _nullable(_count(MAX_COUNT)),
                            "output_tokens": _nullable(_count(MAX_COUNT)),
                            "cache_creation": _nullable(
                                _object(
                                    {
                                        "ephemeral_5m_input_tokens": _nullable(_count(MAX_COUNT)),
                                        "ephemeral_1h_input_tokens": _nullable(_count(MAX_COUNT)),
                                    },
                                    closed=False,
                                )
                            ),
                            **{name: _GROUP_ID for name in ("model", "api_key_id", "workspace_id")},
                        },
                        required=["uncached_input_tokens"],
                        closed=False,
                        description="a usage result",
                    ),
                    _object(
                        {
                            "amount": Schema(
                                type=[OpenAPIType.NUMBER, OpenAPIType.STRING],
                                description="in the currency's lowest unit (cents)",
                            ),
                            "currency": Schema(type=OpenAPIType.STRING, pattern="^[uU][sS][dD]$"),
                            "description": _LINE_ITEM,
                            "model": _GROUP_ID,
                            "workspace_id": _GROUP_ID,
                        },
                        required=["amount", "currency"],
                        closed=False,
                        description="a cost result",
                    ),
                ]
            )
        ),
    },
    required=["starting_at", "ending_at", "results"],
    closed=False,
)

PROVIDER_REPORT: Final = DocumentedBody(
    content={
        JSON: Schema(
            any_of=[
                _report_page(Schema(any_of=[_OPENAI_BUCKET, _ANTHROPIC_BUCKET])),
                _list(_report_page(Schema(any_of=[_OPENAI_BUCKET, _ANTHROPIC_BUCKET]))),
            ],
            description=(
                "A usage or cost report page of the provider named in the path (OpenAI "
                "buckets for openai, Anthropic buckets for anthropic), or a JSON list of pages"
            ),
        ),
        CSV_MEDIA_TYPE: Schema(
            type=OpenAPIType.STRING,
            description=(
                "A console CSV export of the provider named in the path, with its header row "
                "(UTF-8 unless the Content-Type's charset says otherwise). openai: Usage → "
                "Export, the cost CSV (start_time, end_time, amount_value, amount_currency; "
                "line_item, project_id, api_key_id, user_id) or the activity CSV (start_time, "
                "end_time, input_tokens; output_tokens, input_cached_tokens, "
                "num_model_requests, model, project_id, api_key_id, user_id). anthropic: "
                "Console Usage → Export (usage_date_utc, model_version, "
                "usage_input_tokens_no_cache, usage_output_tokens; "
                "usage_input_tokens_cache_write_5m, usage_input_tokens_cache_write_1h, "
                "usage_input_tokens_cache_read, api_key, workspace) or Cost → Export "
                "(usage_date_utc, cost_usd in USD; model, token_type, cost_type, api_key, "
                "api_key_id, workspace)"
            ),
        ),
    },
    description=(
        "A provider's usage or cost report, as its Admin API answers it (JSON) or as its "
        "console exports it (CSV)"
    ),
    errors={
        404: f"No importer for the provider (one of {', '.join(PROVIDERS)})",
        **TOO_LARGE,
        **_NOT_READ,
        422: "CSV rows that cannot be read, each named by its row (the header is row 1); "
        "nothing was imported",
    },
    path_choices={"provider": PROVIDERS},
)

IMPORT_MAPPING: Final = DocumentedBody(
    content={
        JSON: _list(
            _object(
                {
                    "provider": _choice(PROVIDERS),
                    "field": _choice(IMPORT_SOURCE_FIELDS, "the provider-side id this rule reads"),
                    "value": _text(min_length=1),
                    **{name: _nullable(_text()) for name in ("department", "project", "employee")},
                },
                required=["provider", "field", "value"],
                closed=False,
                description="results whose field is value belong to these owners",
            )
        )
    },
    description="The tenant's whole import mapping; each (provider, field, value) once",
)
