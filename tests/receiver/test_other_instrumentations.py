"""Spans from other instrumentations, one event per call, and privacy at ingest."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from p402.instrumentation.money import from_picos
from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.events import EventFilter, EventRecord, insert_events, list_events
from p402.ledger.keys import Role, create_key
from p402.receiver.conversion import IngestPolicy, convert_spans
from p402.receiver.otlp import PlainSpan

START_NS = 1_763_596_800 * 10**9  # 2026-11-20T00:00:00Z, the manifest's pricing date
RESPONSE_ID = "msg_01TD1GKJuDa6ZrY4zkYPcA4s"
CANARY = "CANARY-91ab the acquisition target is Initech"


def _span(attributes: dict[str, object], span_id: str = "00000000000000a1") -> PlainSpan:
    return PlainSpan(
        "0af7651916cd43dd8448eb211c80319c",
        span_id,
        "chat",
        START_NS,
        START_NS + 10**9,
        attributes,
        {},
    )


# What the anthropic SDK's own tracing reports for anthropic_messages.json.
ANTHROPIC_SDK_SPAN = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.response.id": RESPONSE_ID,
    "gen_ai.usage.input_tokens": 10252,
    "gen_ai.usage.output_tokens": 512,
    "gen_ai.usage.cache_read.input_tokens": 8192,
    "gen_ai.usage.cache_write.input_tokens": 2048,
}
# The same call as OpenLLMetry reports it: older names, input without the cache.
OPENLLMETRY_SPAN = {
    "llm.request.type": "chat",
    "gen_ai.system": "Anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.response.id": RESPONSE_ID,
    "gen_ai.usage.prompt_tokens": 12,
    "gen_ai.usage.completion_tokens": 512,
    "gen_ai.usage.cache_read_input_tokens": 8192,
    "gen_ai.usage.cache_creation_input_tokens": 2048,
}
P402_SPAN = {
    **ANTHROPIC_SDK_SPAN,
    "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f3",
    "p402.owner.department": "legal",
}


@pytest.mark.parametrize("attributes", [ANTHROPIC_SDK_SPAN, OPENLLMETRY_SPAN])
def test_other_instrumentations_spans_become_events_costed_by_the_receiver(attributes):
    (record,) = convert_spans([_span(attributes)], PrivacyMode.METADATA_ONLY).records
    assert record.source == "genai"
    assert record.provider == "anthropic"
    assert (record.input_tokens, record.output_tokens) == (10252, 512)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (8192, 2048)
    assert from_picos(record.cost_picos or 0) == Decimal("0.0178536")
    assert record.cost_evidence == "computed"
    assert record.response_key == f"anthropic:{RESPONSE_ID}"


def _stored(engine, tenant_id: int) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return list_events(connection, tenant_id, EventFilter(), limit=100).data


def _records(*attribute_sets: dict[str, object]) -> list[EventRecord]:
    spans = [_span(attrs, f"{i:016x}") for i, attrs in enumerate(attribute_sets, start=1)]
    return convert_spans(spans, PrivacyMode.METADATA_ONLY).records


@pytest.mark.parametrize("p402_first", [True, False])
def test_a_call_reported_by_p402_and_another_instrumentation_is_one_event(engine, p402_first):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    batches = [_records(P402_SPAN), _records(ANTHROPIC_SDK_SPAN, OPENLLMETRY_SPAN)]
    for batch in batches if p402_first else batches[::-1]:
        insert_events(engine, identity.tenant_id, batch)
    (event,) = _stored(engine, identity.tenant_id)
    assert event["id"] == P402_SPAN["p402.event.id"]
    assert event["department"] == "legal"


def test_reports_in_one_batch_are_one_event(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine, identity.tenant_id, _records(OPENLLMETRY_SPAN, ANTHROPIC_SDK_SPAN, P402_SPAN)
    )
    assert [event["department"] for event in _stored(engine, identity.tenant_id)] == ["legal"]


def test_p402_events_sharing_a_response_id_stay_distinct(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    second = {**P402_SPAN, "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f4"}
    insert_events(engine, identity.tenant_id, _records(P402_SPAN, second))
    assert len(_stored(engine, identity.tenant_id)) == 2


CONTENT_SPAN = {
    **P402_SPAN,
    "p402.privacy.mode": "full_trace",
    "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": f"{CANARY} mail bob@initech.com"}]}]
    ),
    "gen_ai.output.messages": json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "Noted."}]}]
    ),
}


def _policy(mode: PrivacyMode) -> IngestPolicy:
    return IngestPolicy(mode, fingerprint_key=b"tenant-key")


def test_metadata_only_tenants_keep_no_content_even_when_a_client_sends_it():
    (record,) = convert_spans([_span(CONTENT_SPAN)], _policy(PrivacyMode.METADATA_ONLY)).records
    assert record.privacy_mode == "metadata_only"
    assert (record.content_input, record.content_output) == (None, None)
    assert (record.fingerprint_input, record.fingerprint_output) == (None, None)
    assert CANARY not in repr(record)


def test_fingerprint_only_tenants_keep_fingerprints_instead_of_content():
    (record,) = convert_spans([_span(CONTENT_SPAN)], _policy(PrivacyMode.FINGERPRINT_ONLY)).records
    assert (record.content_input, record.content_output) == (None, None)
    assert len(record.fingerprint_input or "") == 64
    assert record.fingerprint_input != record.fingerprint_output
    assert CANARY not in repr(record)


def test_redacting_tenants_redact_again_at_ingest():
    (record,) = convert_spans([_span(CONTENT_SPAN)], _policy(PrivacyMode.REDACTED_TRACE)).records
    assert "bob@initech.com" not in (record.content_input or "")
    assert "[REDACTED:EMAIL]" in (record.content_input or "")
    assert record.privacy_mode == "redacted_trace"


def test_full_trace_tenants_keep_content_verbatim():
    (record,) = convert_spans([_span(CONTENT_SPAN)], _policy(PrivacyMode.FULL_TRACE)).records
    assert record.content_input == CONTENT_SPAN["gen_ai.input.messages"]
