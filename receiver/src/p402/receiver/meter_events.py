"""``POST /v1/events``: meter-only JSON events, for backends that call providers directly and
for history.

The body is a JSON list of events with the field names of the API's event JSON (``id`` is the
idempotency key; ``timestamp`` may lie in the past). Each event is read into the attributes
of an economic-event span and goes through the same conversion as OTLP spans, so cost, privacy
and evidence rules are the same. A batch is all or nothing: one invalid event rejects the
batch with every problem listed, and nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Engine

from p402.instrumentation import vocabulary as v
from p402.ledger.clock import from_iso
from p402.ledger.events import EventRecord, insert_events
from p402.receiver.conversion import IngestPolicy, InvalidSpan, span_to_record
from p402.receiver.otlp import PlainSpan

__all__ = [
    "MAX_EVENTS",
    "READ_ONLY_FIELDS",
    "TRACE_CONTEXT",
    "InvalidEvents",
    "MeterResult",
    "ingest_meter_events",
    "read_events",
]

MAX_EVENTS: Final = 10_000

_ATTRIBUTE_OF: Final = {
    "provider": v.GEN_AI_PROVIDER_NAME,
    "operation": v.GEN_AI_OPERATION_NAME,
    "model_requested": v.GEN_AI_REQUEST_MODEL,
    "model_used": v.GEN_AI_RESPONSE_MODEL,
    "model_original": v.P402_MODEL_ORIGINAL,
    "input_tokens": v.GEN_AI_USAGE_INPUT_TOKENS,
    "output_tokens": v.GEN_AI_USAGE_OUTPUT_TOKENS,
    "cache_read_tokens": v.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "cache_write_tokens": v.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    "reasoning_tokens": v.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    "usage_evidence": v.P402_USAGE_EVIDENCE,
    "policy_result": v.P402_POLICY_RESULT,
    "policy_reason": v.P402_POLICY_REASON,
    "privacy_mode": v.P402_PRIVACY_MODE,
    "response_id": v.GEN_AI_RESPONSE_ID,
    "attempt": v.P402_ATTEMPT,
    "status_code": v.HTTP_RESPONSE_STATUS_CODE,
    **{dimension: v.owner_attribute(dimension) for dimension in v.OWNER_DIMENSIONS},
}
READ_ONLY_FIELDS: Final = (
    "receipt_id",
    "evidence_status",
    "price_version",
    "client_cost_usd",
    "original_cost_usd",
    "original_price_version",
    "cost_mismatch",
    "error_type",
)
"""Fields of the event JSON the ledger sets itself: accepted (an event read from the API can
be sent back) and ignored."""
_READ_ONLY: Final = frozenset(READ_ONLY_FIELDS)
_SPECIAL: Final = frozenset(
    {"id", "timestamp", "cost_usd", "cost_evidence", "outcome", "trace_id", "span_id"}
)
TRACE_CONTEXT: Final = {"trace_id": 32, "span_id": 16}
"""The trace context an event may carry, the call's span: hex digits of each, in W3C form."""
_LOWER_HEX: Final = re.compile("[0-9a-f]+")
_OUTCOMES: Final = frozenset(outcome.value for outcome in v.Outcome)


class InvalidEvents(ValueError):
    """The batch cannot be stored; ``problems`` says what is wrong with which event."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (" …" if len(problems) > 20 else ""))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class MeterResult:
    accepted: int
    inserted: int


def _span_of(event: Mapping[str, Any]) -> tuple[PlainSpan, str | None]:
    unknown = set(event) - set(_ATTRIBUTE_OF) - _READ_ONLY - _SPECIAL
    if unknown:
        raise InvalidSpan(f"unknown field(s) {', '.join(sorted(unknown))}")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidSpan("id must be a non-empty string")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, str):
        raise InvalidSpan("timestamp must be an ISO-8601 date-time string")
    try:
        start_ns = from_iso(timestamp) * 1_000_000
    except ValueError as error:
        raise InvalidSpan(f"timestamp: {error}") from None
    if not (event.get("model_used") or event.get("model_requested")):
        raise InvalidSpan("model_used or model_requested is required")
    attributes: dict[str, Any] = {v.P402_EVENT_ID: event_id}
    attributes.setdefault(v.GEN_AI_OPERATION_NAME, "chat")
    for field, attribute in _ATTRIBUTE_OF.items():
        value = event.get(field)
        if isinstance(value, list | dict):
            kind = "array" if isinstance(value, list) else "object"
            raise InvalidSpan(f"{field} must be a single value, not a JSON {kind}")
        if value is not None:
            attributes[attribute] = value
    if (cost := event.get("cost_usd")) is not None:
        if isinstance(cost, float):
            raise InvalidSpan("cost_usd must be a decimal string, not a binary float")
        attributes[v.GEN_AI_USAGE_COST_AMOUNT] = str(cost) if isinstance(cost, int) else cost
        reported = event.get("cost_evidence") == v.CostEvidence.PROVIDER_REPORTED.value
        attributes[v.GEN_AI_USAGE_COST_SOURCE] = (
            v.CostSource.PROVIDER.value if reported else v.CostSource.LOCAL.value
        )
    outcome = event.get("outcome")
    if outcome is not None and (not isinstance(outcome, str) or outcome not in _OUTCOMES):
        raise InvalidSpan(f"outcome {outcome!r} is not one of {', '.join(sorted(_OUTCOMES))}")
    trace_id, span_id = (_trace_context(event, field) for field in TRACE_CONTEXT)
    if bool(trace_id) != bool(span_id):
        raise InvalidSpan("trace_id and span_id go together: give both or neither")
    return PlainSpan(trace_id, span_id, "", start_ns, start_ns, attributes, {}), outcome


def _trace_context(event: Mapping[str, Any], field: str) -> str:
    value = event.get(field)
    if value is None:
        return ""
    digits = TRACE_CONTEXT[field]
    if not isinstance(value, str) or len(value) != digits or not _LOWER_HEX.fullmatch(value):
        raise InvalidSpan(f"{field} must be {digits} lowercase hex digits, not {value!r}")
    return value


def read_events(body: bytes, policy: IngestPolicy) -> list[EventRecord]:
    """The ledger records of a JSON event batch; raises :class:`InvalidEvents`."""
    try:
        events = json.loads(body, parse_float=Decimal)
    except ValueError as error:
        raise InvalidEvents([f"not JSON: {error}"]) from None
    if not isinstance(events, list):
        raise InvalidEvents(["the body must be a JSON list of events"])
    if len(events) > MAX_EVENTS:
        raise InvalidEvents([f"at most {MAX_EVENTS} events per request, not {len(events)}"])
    records: list[EventRecord] = []
    problems: list[str] = []
    for index, event in enumerate(events):
        try:
            if not isinstance(event, dict):
                raise InvalidSpan("an event must be a JSON object")
            if isinstance(event.get("cost_usd"), Decimal):
                raise InvalidSpan("cost_usd must be a decimal string, not a JSON number")
            span, outcome = _span_of(event)
            record = span_to_record(span, policy)
        except InvalidSpan as error:
            problems.append(f"event {index}: {error}")
            continue
        record.trace_id = record.trace_id or None
        record.span_id = record.span_id or None
        record.outcome = outcome
        records.append(record)
    if problems:
        raise InvalidEvents(problems)
    return records


def ingest_meter_events(
    engine: Engine, tenant_id: int, body: bytes, policy: IngestPolicy
) -> MeterResult:
    """Validate the whole batch, then store it in one transaction."""
    records = read_events(body, policy)
    return MeterResult(accepted=len(records), inserted=insert_events(engine, tenant_id, records))
