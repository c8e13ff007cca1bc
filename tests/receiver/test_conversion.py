"""Spans → ledger records, as a pure function."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from p402.instrumentation.money import from_picos
from p402.instrumentation.pricing import price_version
from p402.instrumentation.privacy import content_policy
from p402.instrumentation.vocabulary import PrivacyMode
from p402.receiver.conversion import IngestPolicy, convert_spans
from p402.receiver.otlp import PlainSpan

# 2026-11-20T00:00:00Z, the manifest's pricing date
START_NS = 1_763_596_800 * 10**9


def _span(attributes: dict[str, object], span_id: str = "00000000000000a1") -> PlainSpan:
    return PlainSpan(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id=span_id,
        name="chat gpt-5-mini",
        start_ns=START_NS,
        end_ns=START_NS + 10**9,
        attributes=attributes,
        resource={},
    )


P402_SPAN = {
    "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f3",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.response.model": "gpt-5-mini-2025-08-07",
    "gen_ai.usage.input_tokens": 1342,
    "gen_ai.usage.output_tokens": 214,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.cache_write.input_tokens": 0,
    "gen_ai.usage.reasoning.output_tokens": 192,
    "gen_ai.usage.cost.amount": "0.0005331",
    "gen_ai.usage.cost.source": "local",
    "p402.owner.department": "legal",
    "p402.privacy.mode": "metadata_only",
    "p402.usage.evidence": "provider_response",
    "p402.attempt": 1,
    "http.response.status_code": 200,
}


def test_a_p402_span_becomes_a_record_costed_by_the_receiver():
    conversion = convert_spans([_span(P402_SPAN)], PrivacyMode.METADATA_ONLY)
    (record,) = conversion.records
    assert record.event_id == P402_SPAN["p402.event.id"]
    assert record.ts_ms == START_NS // 10**6
    assert record.model_requested == "gpt-5-mini"
    assert record.model_used == "gpt-5-mini-2025-08-07"
    assert (record.input_tokens, record.output_tokens) == (1342, 214)
    assert from_picos(record.cost_picos or 0) == Decimal("0.0005331")
    assert record.cost_evidence == "computed"
    assert record.price_version == price_version()
    assert record.cost_mismatch is False
    assert record.department == "legal"
    assert record.attempt == 1


def test_a_client_cost_that_disagrees_is_kept_and_flagged():
    span = _span({**P402_SPAN, "gen_ai.usage.cost.amount": "0.0009999"})
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert from_picos(record.cost_picos or 0) == Decimal("0.0005331")
    assert from_picos(record.client_cost_picos or 0) == Decimal("0.0009999")
    assert record.cost_mismatch is True


def test_a_provider_reported_cost_is_the_billed_amount():
    span = _span(
        {
            **P402_SPAN,
            "gen_ai.provider.name": "openrouter",
            "gen_ai.response.model": "anthropic/claude-sonnet-4.5",
            "gen_ai.usage.cost.amount": "0.000762",
            "gen_ai.usage.cost.source": "provider",
        }
    )
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert record.cost_evidence == "provider_reported"
    assert from_picos(record.cost_picos or 0) == Decimal("0.000762")


def test_non_llm_spans_are_ignored_and_counted():
    conversion = convert_spans(
        [_span({"http.request.method": "GET"}), _span(P402_SPAN)], PrivacyMode.METADATA_ONLY
    )
    assert (len(conversion.records), conversion.ignored, conversion.rejected) == (1, 1, 0)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("gen_ai.usage.input_tokens", -5),
        ("gen_ai.usage.output_tokens", "many"),
        ("gen_ai.usage.cost.amount", "free"),
        ("p402.usage.evidence", "guessed"),
    ],
)
def test_spans_that_cannot_make_a_truthful_event_are_rejected(attribute, value):
    conversion = convert_spans([_span({**P402_SPAN, attribute: value})], PrivacyMode.METADATA_ONLY)
    assert conversion.records == []
    assert conversion.rejected == 1
    assert attribute in conversion.errors[0]


def test_a_privacy_mode_above_the_tenants_maximum_is_capped():
    span = _span({**P402_SPAN, "p402.privacy.mode": "full_trace"})
    (record,) = convert_spans([span], PrivacyMode.FINGERPRINT_ONLY).records
    assert record.privacy_mode == "fingerprint_only"


def test_a_span_without_p402_id_is_keyed_by_trace_and_span_id():
    attributes = {k: v for k, v in P402_SPAN.items() if k != "p402.event.id"}
    (record,) = convert_spans([_span(attributes)], PrivacyMode.METADATA_ONLY).records
    assert record.event_id == "0af7651916cd43dd8448eb211c80319c00000000000000a1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gen_ai.usage.cache_read.input_tokens": 5000}, "exceed the input tokens"),
        ({"gen_ai.usage.reasoning.output_tokens": 500}, "exceed the output tokens"),
        ({"gen_ai.usage.input_tokens": None}, "without an input token count"),
        ({"gen_ai.usage.input_tokens": 10**13}, "an integer from 0 to"),
        ({"gen_ai.usage.cost.amount": "5000000"}, "must be from 0 to"),
        ({"gen_ai.usage.cost.amount": "-1"}, "must be from 0 to"),
    ],
)
def test_impossible_usage_or_cost_is_rejected_not_stored(changes, message):
    attributes = {k: v for k, v in {**P402_SPAN, **changes}.items() if v is not None}
    conversion = convert_spans([_span(attributes)], PrivacyMode.METADATA_ONLY)
    assert conversion.records == []
    assert message in conversion.errors[0]


def test_a_span_with_neither_event_id_nor_ids_is_rejected():
    attributes = {k: v for k, v in P402_SPAN.items() if k != "p402.event.id"}
    span = PlainSpan("", "", "chat", START_NS, START_NS, attributes, {})
    assert (
        "p402.event.id, or a trace id" in convert_spans([span], PrivacyMode.METADATA_ONLY).errors[0]
    )


def test_owners_are_the_dimensions_a_span_names_and_none_for_the_rest():
    span = _span(
        {
            **P402_SPAN,
            "p402.owner.project": "contracts",
            "p402.owner.task_type": "summarise",
            "p402.owner.employee": "",  # named, but empty: not an owner
            "p402.owner.colour": "blue",  # not a dimension
        }
    )
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert (record.department, record.project, record.task_type) == (
        "legal",
        "contracts",
        "summarise",
    )
    assert (record.employee, record.client, record.session, record.outcome) == (None,) * 4


@pytest.mark.parametrize(
    ("owner_session", "expected"),
    [(None, "conversation-7"), ("", "conversation-7"), ("session-3", "session-3")],
)
def test_the_session_is_the_owner_attribute_else_the_conversation_id(owner_session, expected):
    attributes = {**P402_SPAN, "gen_ai.conversation.id": "conversation-7"}
    if owner_session is not None:
        attributes["p402.owner.session"] = owner_session
    (record,) = convert_spans([_span(attributes)], PrivacyMode.METADATA_ONLY).records
    assert record.session == expected


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("p402.owner.project", "p" * 201, "longer than 200 characters"),
        ("p402.owner.department", "le\x00gal", "NUL character"),
        ("gen_ai.response.model", "gpt\x00", "NUL character"),
        ("gen_ai.operation.name", "c" * 33, "longer than 32 characters"),
    ],
)
def test_text_the_ledger_cannot_store_is_rejected(attribute, value, message):
    conversion = convert_spans([_span({**P402_SPAN, attribute: value})], PrivacyMode.METADATA_ONLY)
    assert conversion.records == []
    assert f"{attribute} " in conversion.errors[0]
    assert message in conversion.errors[0]


@pytest.mark.parametrize(
    ("value", "kind"),
    [(("legal", "tax"), "an array"), ({"name": "legal"}, "a key-value list"), (b"legal", "bytes")],
)
def test_an_owner_or_model_that_is_not_a_scalar_is_rejected_not_written_out(value, kind):
    for attribute in ("p402.owner.department", "gen_ai.response.model"):
        span = _span({**P402_SPAN, attribute: value})
        conversion = convert_spans([span], PrivacyMode.METADATA_ONLY)
        assert conversion.records == []
        assert conversion.errors == [
            f"span 00000000000000a1: {attribute} must be a string, not {kind}"
        ]


def test_structured_message_content_is_kept_as_json():
    messages = ({"role": "user", "parts": ({"type": "text", "content": "Is this NDA standard?"},)},)
    span = _span(
        {**P402_SPAN, "p402.privacy.mode": "full_trace", "gen_ai.input.messages": messages}
    )
    (record,) = convert_spans([span], PrivacyMode.FULL_TRACE).records
    assert record.content_input is not None
    assert json.loads(record.content_input) == [
        {"role": "user", "parts": [{"type": "text", "content": "Is this NDA standard?"}]}
    ]


def test_text_attributes_of_other_types_are_stored_as_text():
    span = _span({**P402_SPAN, "p402.owner.project": 1234, "error.type": 429})
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert (record.project, record.error_type) == ("1234", "429")


def test_owners_the_span_leaves_out_come_from_its_resource():
    resource = {
        "service.name": "contracts-api",
        "p402.owner.department": "finance",  # the span names legal: the span wins
        "p402.owner.project": "contracts",
        "p402.owner.session": "from-the-resource",  # the conversation id wins
        "p402.owner.colour": "blue",  # not a dimension
    }
    attributes = {**P402_SPAN, "gen_ai.conversation.id": "conversation-7"}
    span = PlainSpan(
        "0af7651916cd43dd8448eb211c80319c", "00000000000000a1", "chat", START_NS, START_NS,
        attributes, resource,
    )  # fmt: skip
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert (record.department, record.project, record.session) == (
        "legal",
        "contracts",
        "conversation-7",
    )
    assert record.employee is None

    bare = {k: v for k, v in P402_SPAN.items() if not k.startswith("p402.owner.")}
    span = PlainSpan("", "", "chat", START_NS, START_NS, bare, resource)
    (record,) = convert_spans([span], PrivacyMode.METADATA_ONLY).records
    assert (record.department, record.session) == ("finance", "from-the-resource")


def test_a_tenant_fingerprint_key_gives_the_same_fingerprints_in_the_instrumentation_and_here():
    key = "0f" * 32  # as PUT /v1/settings shows it, and P402_FINGERPRINT_KEY takes it
    messages = [{"role": "user", "parts": [{"type": "text", "content": "Is this NDA standard?"}]}]
    client_side = content_policy(PrivacyMode.FULL_TRACE, api_key="p402_x", fingerprint_key=key)
    sent = client_side.attributes(messages, [])
    # the receiver makes the fingerprint of content that comes without one
    span = _span({**P402_SPAN, "gen_ai.input.messages": sent["gen_ai.input.messages"]})
    policy = IngestPolicy(PrivacyMode.FINGERPRINT_ONLY, fingerprint_key=bytes.fromhex(key))
    (record,) = convert_spans([span], policy).records
    assert record.content_input is None
    assert record.fingerprint_input == sent["p402.content.fingerprint.input"]
