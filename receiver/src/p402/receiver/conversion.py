"""Spans → ledger records: a pure function, separate from HTTP and from the database.

A span becomes an economic event when it is a P402 economic-event span (it carries
``p402.event.id``) or a GenAI span with a model and an operation, as other instrumentations
emit them (OpenTelemetry's GenAI instrumentations, OpenLLMetry, the anthropic SDK's own
tracing; older attribute names are read too). Everything else is ignored and counted.

The ledger's cost is computed here, deterministically from usage, model, timestamp and the
receiver's price data, or the tenant's negotiated rates where they apply; a provider-reported
cost (e.g. OpenRouter) is the billed amount and
wins. The client's own figure is kept beside it, and a disagreement flagged.

An event signed in ``private_gateway`` mode (``p402.event.signature``) must verify against
the key that sent it or the tenant's own signing key, or it is rejected.

Content is filtered here, before anything is written, by the tenant's maximum privacy mode:
under ``metadata_only`` neither content nor fingerprints are kept, under
``fingerprint_only`` content becomes keyed fingerprints, under ``redacted_trace`` and
``private_gateway`` it is redacted again, and only ``full_trace`` keeps it verbatim.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from p402.instrumentation import vocabulary as v
from p402.instrumentation.money import parse_usd, to_picos
from p402.instrumentation.privacy import Redactor, sign_attributes
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import CostEvidence, PrivacyMode, UsageEvidence
from p402.ledger.costing import ledger_cost
from p402.ledger.events import EventRecord
from p402.ledger.price_overrides import RateOverride
from p402.receiver.otlp import PlainSpan

__all__ = ["Conversion", "IngestPolicy", "InvalidSpan", "convert_spans", "span_to_record"]


MAX_TOKENS: Final = 10**12
"""More tokens than any call can use: a count above it is an error, not usage."""
MAX_EVENT_USD: Final = Decimal(1_000_000)
MAX_EVENT_ID_LENGTH: Final = 64
MAX_CONTENT_LENGTH: Final = 4_000_000
"""A larger cost for one call is an error (and would not fit the ledger's columns)."""


class InvalidSpan(ValueError):
    """An LLM span whose attributes cannot make a truthful event; the message says why."""


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """What a tenant allows the ledger to keep."""

    max_privacy: PrivacyMode = PrivacyMode.METADATA_ONLY
    fingerprint_key: bytes = b""
    redactor: Redactor = field(default_factory=Redactor)
    rates: tuple[RateOverride, ...] = ()
    """Negotiated rates, used instead of the public price data where they apply."""
    signing_key: bytes | None = None
    """A key signed events may be signed with: the SHA-256 (hex) of the presenting API key."""
    tenant_signing_key: bytes | None = None
    """The other key they may be signed with: the tenant's own signing key (hex), if set."""


@dataclass(slots=True)
class Conversion:
    records: list[EventRecord] = field(default_factory=list)
    ignored: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def _is_llm_span(attributes: dict[str, Any]) -> bool:
    if v.P402_EVENT_ID in attributes:
        return True
    has_model = v.GEN_AI_REQUEST_MODEL in attributes or v.GEN_AI_RESPONSE_MODEL in attributes
    has_provider = v.GEN_AI_PROVIDER_NAME in attributes or v.GEN_AI_SYSTEM in attributes
    return has_model and (v.GEN_AI_OPERATION_NAME in attributes or has_provider)


def _count(attributes: dict[str, Any], key: str) -> int | None:
    value = attributes.get(key)
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the usual case, decided at once
        return value
    if value is None:
        for alias in v.LEGACY_USAGE_NAMES.get(key, ()):
            if (value := attributes.get(alias)) is not None:
                key = alias
                break
        else:
            return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise InvalidSpan(f"{key} must be an integer from 0 to {MAX_TOKENS}, not {value!r}")
    return value


def _text(
    attributes: dict[str, Any], key: str, limit: int = 200, *, structured: bool = False
) -> str | None:
    """A text attribute as the ledger can store it (at most ``limit`` characters, no NUL).

    A number is written out; an array or a key-value list is refused, unless ``structured``
    (message content, which GenAI instrumentations may record as structured values): it is
    then kept as JSON."""
    value = attributes.get(key)
    if type(value) is str and len(value) <= limit and "\x00" not in value:
        return value or None  # the usual case, decided at once
    if value is None or value == "":
        return None
    if isinstance(value, tuple | list | dict | bytes):
        if not structured or isinstance(value, bytes):
            kind = _KINDS.get(type(value), "an array")
            raise InvalidSpan(f"{key} must be a string, not {kind}")
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    else:
        text = str(value)
    if "\x00" in text:
        raise InvalidSpan(f"{key} contains a NUL character")
    if len(text) > limit:
        raise InvalidSpan(f"{key} is longer than {limit} characters")
    return text


_KINDS: Final = {dict: "a key-value list", bytes: "bytes"}


def _values(allowed: type[Any]) -> dict[str, str]:
    return {str(member.value): str(member.value) for member in allowed}


_KNOWN_VALUES: Final = {
    allowed: _values(allowed) for allowed in (UsageEvidence, PrivacyMode, v.PolicyResult)
}
"""The values of the enumerations spans name, looked up without calling the enumeration."""
_PRIVACY_RANKS: Final = {mode.value: mode.rank for mode in PrivacyMode}
# Values as plain strings, looked up once rather than per span.
_PROVIDER_SOURCE: Final = v.CostSource.PROVIDER.value
_PROVIDER_RESPONSE: Final = UsageEvidence.PROVIDER_RESPONSE.value
_MISSING: Final = UsageEvidence.MISSING.value
_METADATA_ONLY: Final = PrivacyMode.METADATA_ONLY.value
_ALLOWED: Final = v.PolicyResult.ALLOWED.value
_PROVIDER_REPORTED: Final = CostEvidence.PROVIDER_REPORTED.value
_UNPRICED: Final = CostEvidence.UNPRICED.value
_COMPUTED: Final = CostEvidence.COMPUTED.value


def _choice(attributes: dict[str, Any], key: str, allowed: type[Any], default: str) -> str:
    value = attributes.get(key)
    if value is None:
        return default
    if type(value) is str and (known := _KNOWN_VALUES[allowed].get(value)) is not None:
        return known
    try:
        return str(allowed(value).value)
    except ValueError:
        raise InvalidSpan(f"{key}={value!r} is not a known value") from None


def _provider(attributes: dict[str, Any]) -> str | None:
    name = _text(attributes, v.GEN_AI_PROVIDER_NAME, 64) or _text(attributes, v.GEN_AI_SYSTEM, 64)
    if name is None:
        return None
    name = name.lower()
    return v.PROVIDER_NAME_ALIASES.get(name, name)


def _usage(attributes: dict[str, Any], from_p402: bool) -> TokenUsage:
    input_tokens = _count(attributes, v.GEN_AI_USAGE_INPUT_TOKENS)
    cache_read = _count(attributes, v.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
    cache_write = _count(attributes, v.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
    cached = (cache_read or 0) + (cache_write or 0)
    if not from_p402 and input_tokens is not None and input_tokens < cached:
        # A reporter that counts input without the cache (Anthropic's own convention): the
        # total input is the sum, as the semantic conventions define it.
        input_tokens += cached
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=_count(attributes, v.GEN_AI_USAGE_OUTPUT_TOKENS),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_count(attributes, v.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
    )


def _content(
    attributes: dict[str, Any], policy: IngestPolicy
) -> tuple[str | None, str | None, str | None, str | None]:
    """What of the span's content the tenant may keep: (input, output, fingerprints)."""
    mode = policy.max_privacy
    if mode is PrivacyMode.METADATA_ONLY:
        return None, None, None, None
    texts = [
        _text(attributes, v.GEN_AI_INPUT_MESSAGES, MAX_CONTENT_LENGTH, structured=True),
        _text(attributes, v.GEN_AI_OUTPUT_MESSAGES, MAX_CONTENT_LENGTH, structured=True),
    ]
    fingerprints = [
        _text(attributes, v.P402_CONTENT_FINGERPRINT_INPUT, 64),
        _text(attributes, v.P402_CONTENT_FINGERPRINT_OUTPUT, 64),
    ]
    for index, text in enumerate(texts):
        if text is not None and fingerprints[index] is None:
            fingerprints[index] = hmac.new(
                policy.fingerprint_key, text.encode(), hashlib.sha256
            ).hexdigest()
    if mode is PrivacyMode.FINGERPRINT_ONLY:
        texts = [None, None]
    elif mode is not PrivacyMode.FULL_TRACE:
        texts = [None if text is None else policy.redactor.redact(text) for text in texts]
    return texts[0], texts[1], fingerprints[0], fingerprints[1]


_OWNER_DIMENSION_OF: Final = {
    v.owner_attribute(dimension): dimension for dimension in v.OWNER_DIMENSIONS
}


def _owners(attributes: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    """The owner dimensions the span names (validated), by dimension; a dimension it leaves
    out is taken from its resource (e.g. ``OTEL_RESOURCE_ATTRIBUTES`` of the service)."""
    # Only the owner attributes present are looked at: a set intersection, in C.
    owners = {
        _OWNER_DIMENSION_OF[key]: _text(attributes, key)
        for key in _OWNER_DIMENSION_OF.keys() & attributes.keys()
    }
    if owners.get("session") is None:
        owners["session"] = _text(attributes, v.GEN_AI_CONVERSATION_ID)
    for key in _OWNER_DIMENSION_OF.keys() & resource.keys():
        dimension = _OWNER_DIMENSION_OF[key]
        if owners.get(dimension) is None:
            owners[dimension] = _text(resource, key)
    return owners


def _signed_by(signature: str, attributes: dict[str, Any], policy: IngestPolicy) -> bool:
    """Whether ``signature`` signs ``attributes`` with a key the tenant's events may use."""
    return any(
        hmac.compare_digest(signature, sign_attributes(attributes, key))
        for key in (policy.signing_key, policy.tenant_signing_key)
        if key
    )


def span_to_record(span: PlainSpan, policy: IngestPolicy) -> EventRecord:
    """The ledger record of one LLM span; raises :class:`InvalidSpan`."""
    a = span.attributes
    from_p402 = v.P402_EVENT_ID in a
    if (signature := a.get(v.P402_EVENT_SIGNATURE)) is not None and not _signed_by(
        str(signature), a, policy
    ):
        raise InvalidSpan(
            "p402.event.signature does not match: the event was changed, or signed neither "
            "with the key that sent it nor with the tenant's signing key"
        )
    event_id = _text(a, v.P402_EVENT_ID, MAX_EVENT_ID_LENGTH)
    if not event_id and not (span.trace_id and span.span_id):
        raise InvalidSpan("a span needs p402.event.id, or a trace id and a span id")
    if span.trace_id and len(span.trace_id) != 32:
        raise InvalidSpan("a trace id has 16 bytes")
    if span.span_id and len(span.span_id) != 16:
        raise InvalidSpan("a span id has 8 bytes")
    usage = _usage(a, from_p402)
    if (problem := usage.inconsistency()) is not None:
        raise InvalidSpan(f"token counts: {problem}")
    provider = _provider(a)
    model_requested = _text(a, v.GEN_AI_REQUEST_MODEL)
    model_used = _text(a, v.GEN_AI_RESPONSE_MODEL) or model_requested
    ts_ms = span.start_ns // 1_000_000
    default_evidence = _PROVIDER_RESPONSE if usage.measured else _MISSING
    usage_evidence = _choice(a, v.P402_USAGE_EVIDENCE, UsageEvidence, default_evidence)

    client_cost: Decimal | None = None
    if (raw_cost := a.get(v.GEN_AI_USAGE_COST_AMOUNT)) is not None:
        try:
            client_cost = parse_usd(raw_cost)
        except ValueError as error:
            raise InvalidSpan(f"{v.GEN_AI_USAGE_COST_AMOUNT}: {error}") from None
        if not 0 <= client_cost < MAX_EVENT_USD:
            raise InvalidSpan(
                f"{v.GEN_AI_USAGE_COST_AMOUNT} must be from 0 to {MAX_EVENT_USD} USD, "
                f"not {raw_cost!r}"
            )
    provider_reported = a.get(v.GEN_AI_USAGE_COST_SOURCE) == _PROVIDER_SOURCE

    client_picos = None if client_cost is None else to_picos(client_cost)
    cost_picos: int | None
    computed_with: str | None = None
    if provider_reported and client_picos is not None:
        cost_picos, cost_evidence = client_picos, _PROVIDER_REPORTED
    else:
        cost_picos, computed_with = ledger_cost(
            usage, model=model_used, provider=provider, ts_ms=ts_ms, overrides=policy.rates
        )
        cost_evidence = _UNPRICED if cost_picos is None else _COMPUTED

    privacy = _choice(a, v.P402_PRIVACY_MODE, PrivacyMode, _METADATA_ONLY)
    if _PRIVACY_RANKS[privacy] > _PRIVACY_RANKS[policy.max_privacy.value]:
        privacy = policy.max_privacy.value
    content_input, content_output, fingerprint_input, fingerprint_output = _content(a, policy)
    response_id = _text(a, v.GEN_AI_RESPONSE_ID)

    status_code = a.get(v.HTTP_RESPONSE_STATUS_CODE)
    return EventRecord(
        event_id=event_id or f"{span.trace_id}{span.span_id}",
        ts_ms=ts_ms,
        usage_evidence=usage_evidence,
        cost_evidence=cost_evidence,
        privacy_mode=privacy,
        provider=provider,
        operation=_text(a, v.GEN_AI_OPERATION_NAME, 32),
        model_requested=model_requested,
        model_used=model_used,
        model_original=_text(a, v.P402_MODEL_ORIGINAL),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_picos=cost_picos,
        client_cost_picos=client_picos,
        cost_mismatch=None not in (client_picos, cost_picos) and client_picos != cost_picos,
        price_version=computed_with,
        policy_result=_choice(a, v.P402_POLICY_RESULT, v.PolicyResult, _ALLOWED),
        policy_reason=_text(a, v.P402_POLICY_REASON, 4000),
        **_owners(a, span.resource),
        response_id=response_id,
        trace_id=span.trace_id,
        span_id=span.span_id,
        attempt=_count(a, v.P402_ATTEMPT) or 0,
        status_code=(
            status_code if isinstance(status_code, int) and 0 <= status_code < 1000 else None
        ),
        error_type=_text(a, v.ERROR_TYPE),
        source="p402" if from_p402 else "genai",
        response_key=f"{provider}:{response_id}" if response_id else None,
        content_input=content_input,
        content_output=content_output,
        fingerprint_input=fingerprint_input,
        fingerprint_output=fingerprint_output,
    )


def convert_spans(spans: Iterable[PlainSpan], policy: IngestPolicy | PrivacyMode) -> Conversion:
    """Records for the LLM spans among ``spans``; the rest ignored, the invalid rejected."""
    if isinstance(policy, PrivacyMode):
        policy = IngestPolicy(policy)
    result = Conversion()
    for span in spans:
        if not _is_llm_span(span.attributes):
            result.ignored += 1
            continue
        try:
            result.records.append(span_to_record(span, policy))
        except InvalidSpan as error:
            result.rejected += 1
            if len(result.errors) < 10:
                result.errors.append(f"span {span.span_id}: {error}")
    return result
