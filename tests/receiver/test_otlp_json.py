"""OTLP/JSON decoding: the same plain spans as protobuf for the same request, and clear errors.

Requests are real: spans made by the OpenTelemetry SDK, encoded by its OTLP exporter, and turned
into OTLP/JSON by ``json_format.MessageToJson`` with the ids rewritten from base64 to hex, as the
OTLP specification requires.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import pytest
from google.protobuf.json_format import MessageToJson, Parse
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from p402.receiver.otlp import (
    MAX_VALUE_NESTING,
    MalformedPayload,
    export_response_json,
    parse_json,
    spans,
)

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

ATTRIBUTES: dict[str, Any] = {
    "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f3",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.usage.input_tokens": 1342,
    "gen_ai.usage.output_tokens": 0,
    "big": INT64_MAX,
    "small": INT64_MIN,
    "negative": -7,
    "ratio": 0.25,
    "whole_double": 3.0,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "negative_zero": -0.0,
    "streamed": True,
    "cached": False,
    "empty": "",
    "unicode": "Zürich — 東京 🚀",
    "escapes": 'quote " backslash \\ newline \n tab \t',
    "strings": ("a", "", "ü"),
    "ints": (1, -2, INT64_MAX),
    "doubles": (0.5, -1.25, 2.0),
    "bools": (True, False),
    "empty_array": (),
}

_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids(node: Any) -> Any:
    """The reference JSON with base64 ids (proto3 mapping) rewritten as hex (OTLP mapping)."""
    if isinstance(node, dict):
        return {
            key: base64.b64decode(value).hex() if key in _ID_FIELDS else _hex_ids(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    return node


def _document(request: ExportTraceServiceRequest, **options: bool) -> dict[str, Any]:
    options = {"use_integers_for_enums": True, **options}
    return _hex_ids(json.loads(MessageToJson(request, **options)))  # type: ignore[no-any-return]


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _request(*attribute_sets: dict[str, Any], service: str = "test") -> ExportTraceServiceRequest:
    """One SDK span per attribute set, the first a parent with an event, a link and a status."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "pod": ("a",)}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("p402.test", "1.2.3", attributes={"scope.flag": True})
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.add_event("started", {"attempt": 1, "tags": ("x", "y")})
        parent.set_status(Status(StatusCode.ERROR, "boom"))
        link = Link(parent.get_span_context(), {"why": "retry"})
        for attributes in attribute_sets:
            tracer.start_span(
                "chat gpt-5-mini", kind=SpanKind.CLIENT, attributes=attributes, links=[link]
            ).end()
    return encode_spans(exporter.get_finished_spans())


def _with_hand_made_values(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """Add the AnyValue kinds the SDK cannot make: bytes, kvlist, nested arrays, no value."""
    span = request.resource_spans[0].scope_spans[0].spans[0]
    values: dict[str, AnyValue] = {}
    values["bytes"] = AnyValue(bytes_value=b"\x00\xff\xfe binary")
    values["empty_bytes"] = AnyValue(bytes_value=b"")
    kvlist = AnyValue()
    for key, item in [("n", AnyValue(int_value=3)), ("s", AnyValue(string_value="t"))]:
        entry = kvlist.kvlist_value.values.add()
        entry.key = key
        entry.value.CopyFrom(item)
    inner = kvlist.kvlist_value.values.add()
    inner.key = "inner"
    inner.value.array_value.values.add().double_value = 1.5
    inner.value.array_value.values.add().bytes_value = b"\x01"
    values["kvlist"] = kvlist
    nested = AnyValue()
    nested.array_value.values.add().array_value.values.add().bool_value = True
    nested.array_value.values.add()  # an AnyValue with no value
    values["nested"] = nested
    values["unset"] = AnyValue()
    values["empty_kvlist"] = AnyValue()
    values["empty_kvlist"].kvlist_value.SetInParent()
    values["empty_array"] = AnyValue()
    values["empty_array"].array_value.SetInParent()
    for key, value in values.items():
        attribute = span.attributes.add()
        attribute.key = key
        attribute.value.CopyFrom(value)
    return request


def _expected(request: ExportTraceServiceRequest) -> list[Any]:
    return list(spans(request))


def _error(document: Any) -> str:
    with pytest.raises(MalformedPayload) as caught:
        parse_json(document if isinstance(document, bytes) else _body(document))
    return str(caught.value)


# --- the same spans as protobuf -----------------------------------------------------------------


def test_sdk_spans_decode_exactly_as_protobuf_does():
    request = _request(ATTRIBUTES, {"http.request.method": "GET"}, {})
    decoded = parse_json(_body(_document(request)))
    assert decoded == _expected(request)
    assert len(decoded) == 4
    child = decoded[0]
    assert child.attributes == ATTRIBUTES
    assert type(child.attributes["whole_double"]) is float
    assert type(child.attributes["big"]) is int
    assert type(child.attributes["streamed"]) is bool
    # each value keeps its kind through protobuf too: zeros, False and "" included
    protobuf = _expected(request)[0].attributes
    assert {key: type(value) for key, value in protobuf.items()} == {
        key: type(value) for key, value in ATTRIBUTES.items()
    }
    assert child.resource["service.name"] == "test"
    assert len(child.trace_id) == 32 and len(child.span_id) == 16


def test_hand_made_any_values_decode_exactly_as_protobuf_does():
    request = _with_hand_made_values(_request(ATTRIBUTES))
    decoded = parse_json(_body(_document(request)))
    assert decoded == _expected(request)
    attributes = decoded[0].attributes
    assert attributes["bytes"] == b"\x00\xff\xfe binary"
    assert attributes["kvlist"] == {"n": 3, "s": "t", "inner": (1.5, b"\x01")}
    assert attributes["nested"] == ((True,), None)
    assert attributes["unset"] is None
    assert (attributes["empty_kvlist"], attributes["empty_array"]) == ({}, ())


def test_several_resources_keep_their_own_resource_attributes():
    request = _request(ATTRIBUTES, service="one")
    request.resource_spans.extend(_request({"k": 1}, service="two").resource_spans)
    decoded = parse_json(_body(_document(request)))
    assert decoded == _expected(request)
    assert [span.resource["service.name"] for span in decoded] == ["one", "one", "two", "two"]


def test_proto_field_names_are_accepted_too():
    request = _with_hand_made_values(_request(ATTRIBUTES))
    document = _document(request, preserving_proto_field_name=True)
    assert "resource_spans" in document
    assert parse_json(_body(document)) == _expected(request)


def test_enum_names_numbers_for_int64_and_upper_case_hex_are_accepted():
    request = _request(ATTRIBUTES)
    document = _document(request, use_integers_for_enums=False)

    def loosen(node: Any) -> Any:
        if isinstance(node, dict):
            loose = {key: loosen(value) for key, value in node.items()}
            for key in ("intValue", "startTimeUnixNano", "endTimeUnixNano", "timeUnixNano"):
                if key in loose:
                    loose[key] = int(loose[key])
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in loose:
                    loose[key] = loose[key].upper()
            return loose
        if isinstance(node, list):
            return [loosen(item) for item in node]
        return node

    body = _body(loosen(document))
    assert b'"kind": "SPAN_KIND_CLIENT"' in body
    assert b'"intValue": 1342' in body
    assert parse_json(body) == _expected(request)


def test_integral_doubles_as_json_numbers_and_special_doubles_as_strings():
    document = _document(_request({"d": 1.0}))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [
        {"key": "int_as_number", "value": {"doubleValue": 2}},
        {"key": "quoted", "value": {"doubleValue": "2.5e3"}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "inf", "value": {"doubleValue": "Infinity"}},
        {"key": "minus_inf", "value": {"doubleValue": "-Infinity"}},
        {"key": "integral_float_int", "value": {"intValue": 1e3}},
    ]
    attributes = parse_json(_body(document))[0].attributes
    assert attributes["int_as_number"] == 2.0 and type(attributes["int_as_number"]) is float
    assert attributes["quoted"] == 2500.0
    assert math.isnan(attributes["nan"])
    assert (attributes["inf"], attributes["minus_inf"]) == (math.inf, -math.inf)
    assert attributes["integral_float_int"] == 1000
    assert type(attributes["integral_float_int"]) is int


def test_unknown_fields_are_ignored_and_null_is_absent():
    request = _request(ATTRIBUTES)
    document = _document(request)
    document["futureField"] = {"anything": [1, 2]}
    resource_spans = document["resourceSpans"][0]
    resource_spans["resource"]["entityRefs"] = [{"type": "service"}]
    span = resource_spans["scopeSpans"][0]["spans"][0]
    span["somethingNew"] = "x"
    span["traceState"] = None
    span["attributes"][0]["value"]["futureValueKind"] = 1
    assert parse_json(_body(document)) == _expected(request)


def test_absent_fields_take_the_protobuf_defaults():
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.attributes.add().key = "no value"
    spans_ = [{"attributes": [{"key": "no value"}]}]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans_}]}]}
    decoded = parse_json(_body(document))
    assert decoded == _expected(request)
    assert decoded[0].trace_id == "" and decoded[0].start_ns == 0
    assert parse_json(b"{}") == []
    assert parse_json(b'{"resourceSpans": []}') == []
    assert parse_json(b'\xef\xbb\xbf{"resourceSpans": null}') == []


def test_resource_attributes_are_shared_by_the_spans_of_a_resource():
    decoded = parse_json(_body(_document(_request({"a": 1}, {"b": 2}))))
    assert decoded[0].resource is decoded[1].resource is decoded[2].resource


def test_extreme_integers_are_in_range():
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "00000000000000a1",
        "startTimeUnixNano": "18446744073709551615",
        "endTimeUnixNano": 0,
        "attributes": [
            {"key": "max", "value": {"intValue": "9223372036854775807"}},
            {"key": "min", "value": {"intValue": "-9223372036854775808"}},
            {"key": "padded", "value": {"intValue": "007"}},
        ],
    }
    (decoded,) = parse_json(_body({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
    assert decoded.start_ns == 2**64 - 1
    assert decoded.attributes == {"max": INT64_MAX, "min": INT64_MIN, "padded": 7}


# --- what is not an OTLP/JSON export request ----------------------------------------------------

SPANS = "resourceSpans[0].scopeSpans[0].spans"


def _one_span(**fields: Any) -> dict[str, Any]:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "00000000000000a1",
        "name": "chat",
        "startTimeUnixNano": "1763596800000000000",
        "endTimeUnixNano": "1763596801000000000",
        "attributes": [{"key": "ok", "value": {"stringValue": "fine"}}],
    }
    good = dict(span, attributes=[])
    for key in fields:  # a proto field name replaces the JSON name
        span.pop(re.sub(r"_([a-z])", lambda match: match.group(1).upper(), key), None)
    span.update(fields)
    return {"resourceSpans": [{"scopeSpans": [{"spans": [good, good, good, span]}]}]}


def _attribute(value: Any) -> dict[str, Any]:
    return _one_span(attributes=[{"key": "ok", "value": {"stringValue": "x"}}, value])


BASE64_TRACE_ID = base64.b64encode(bytes.fromhex("0af7651916cd43dd8448eb211c80319c")).decode()

MALFORMED: list[tuple[Any, str]] = [
    (b'{"resourceSpans": [', "not JSON: Expecting value: line 1 column 20"),
    (b"", "not JSON: Expecting value"),
    (b"\xff\xfe\xfd", "not JSON"),
    (b'{"a": "\xc3\x28"}', "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b'{"resourceSpans": NaN}', 'not JSON: NaN is not JSON (OTLP/JSON quotes it: "NaN")'),
    (b"[]", "not an OTLP ExportTraceServiceRequest: expected a JSON object, got an array"),
    (b'"text"', "expected a JSON object, got a string"),
    ({"resourceSpans": {}}, "resourceSpans: expected an array, got an object"),
    ({"resourceSpans": [3]}, "resourceSpans[0]: expected a ResourceSpans object, got a number"),
    ({"resourceSpans": [{"scopeSpans": "x"}]}, "resourceSpans[0].scopeSpans: expected an array"),
    ({"resource_spans": [{"scope_spans": [{"spans": [None]}]}]}, f"{SPANS}[0]: expected a Span"),
    (
        _one_span(traceId=BASE64_TRACE_ID),
        f"{SPANS}[3].traceId: not 32 hex digits: {json.dumps(BASE64_TRACE_ID)} "
        "(OTLP/JSON writes ids as hex, not base64)",
    ),
    (_one_span(traceId="0af7651916cd43dd8448eb211c80319"), f"{SPANS}[3].traceId: not 32 hex"),
    (_one_span(traceId="0af7651916cd43dd8448eb211c80319g"), f"{SPANS}[3].traceId: not 32 hex"),
    (_one_span(traceId=" af7651916cd43dd8448eb211c80319c"), f"{SPANS}[3].traceId: not 32 hex"),
    (_one_span(trace_id=12), f"{SPANS}[3].traceId: not 32 hex digits: 12"),
    (_one_span(spanId="00000000000000a1ff"), f"{SPANS}[3].spanId: not 16 hex digits"),
    (_one_span(parentSpanId="xyz"), f"{SPANS}[3].parentSpanId: not 16 hex digits"),
    (_one_span(name=5), f"{SPANS}[3].name: expected a string, got a number"),
    (_one_span(startTimeUnixNano="12a"), f'{SPANS}[3].startTimeUnixNano: not an integer: "12a"'),
    (_one_span(startTimeUnixNano=" 12"), f"{SPANS}[3].startTimeUnixNano: not an integer"),
    (_one_span(startTimeUnixNano="1_000"), f"{SPANS}[3].startTimeUnixNano: not an integer"),
    (_one_span(startTimeUnixNano="+12"), f"{SPANS}[3].startTimeUnixNano: not an integer"),
    (_one_span(startTimeUnixNano=""), f"{SPANS}[3].startTimeUnixNano: not an integer"),
    (_one_span(startTimeUnixNano=1.5), f"{SPANS}[3].startTimeUnixNano: not an integer: 1.5"),
    (_one_span(startTimeUnixNano=True), f"{SPANS}[3].startTimeUnixNano: not an integer: true"),
    (_one_span(startTimeUnixNano=[1]), f"{SPANS}[3].startTimeUnixNano: not an integer: an array"),
    (_one_span(startTimeUnixNano=-1), f"{SPANS}[3].startTimeUnixNano: -1 is out of range"),
    (_one_span(end_time_unix_nano=str(2**64)), f"{SPANS}[3].endTimeUnixNano: 1844674407370955"),
    (_one_span(kind="SPAN_KIND_NOPE"), f"{SPANS}[3].kind: expected an enum integer, got a string"),
    (_one_span(kind=2**31), f"{SPANS}[3].kind: 2147483648 is out of range"),
    (_one_span(flags=-1), f"{SPANS}[3].flags: -1 is out of range"),
    (_one_span(droppedAttributesCount="x"), f"{SPANS}[3].droppedAttributesCount: not an integer"),
    (_one_span(status=[]), f"{SPANS}[3].status: expected a Status object, got an array"),
    (_one_span(status={"code": "BAD"}), f"{SPANS}[3].status.code: expected an enum integer"),
    (_one_span(events={}), f"{SPANS}[3].events: expected an array, got an object"),
    (
        _one_span(events=[{"name": "ok"}, {"timeUnixNano": "soon"}]),
        f'{SPANS}[3].events[1].timeUnixNano: not an integer: "soon"',
    ),
    (
        _one_span(links=[{"spanId": "00000000000000a1", "traceId": "00"}]),
        f"{SPANS}[3].links[0].traceId: not 32 hex digits",
    ),
    (
        _one_span(links=[{"attributes": [{"key": "k", "value": {"boolValue": 1}}]}]),
        f"{SPANS}[3].links[0].attributes[0].value.boolValue: expected true or false",
    ),
    (_one_span(attributes={}), f"{SPANS}[3].attributes: expected an array, got an object"),
    (_attribute("key=value"), f"{SPANS}[3].attributes[1]: expected a KeyValue object"),
    (_attribute({"key": 1, "value": {}}), f"{SPANS}[3].attributes[1].key: expected a string"),
    (
        _attribute({"key": "k", "value": "v"}),
        f"{SPANS}[3].attributes[1].value: expected an AnyValue object, got a string",
    ),
    (
        _attribute({"key": "k", "value": {"stringValue": "a", "intValue": "1"}}),
        f"{SPANS}[3].attributes[1].value: more than one value: stringValue and intValue",
    ),
    (
        _attribute({"key": "k", "value": {"stringValue": "a", "string_value": "b"}}),
        f"{SPANS}[3].attributes[1].value: more than one value: stringValue and string_value",
    ),
    (
        _attribute({"key": "k", "value": {"stringValue": 1}}),
        f"{SPANS}[3].attributes[1].value.stringValue: expected a string, got a number",
    ),
    (
        _attribute({"key": "k", "value": {"boolValue": "true"}}),
        f"{SPANS}[3].attributes[1].value.boolValue: expected true or false, got a string",
    ),
    (
        _attribute({"key": "k", "value": {"intValue": True}}),
        f"{SPANS}[3].attributes[1].value.intValue: not an integer: true",
    ),
    (
        _attribute({"key": "k", "value": {"int_value": "9223372036854775808"}}),
        f"{SPANS}[3].attributes[1].value.intValue: 9223372036854775808 is out of range",
    ),
    (
        _attribute({"key": "k", "value": {"intValue": "1" * 5000}}),
        f"{SPANS}[3].attributes[1].value.intValue: not an integer",
    ),
    (
        _attribute({"key": "k", "value": {"doubleValue": "abc"}}),
        f'{SPANS}[3].attributes[1].value.doubleValue: not a number: "abc"',
    ),
    (
        _attribute({"key": "k", "value": {"doubleValue": "nan"}}),
        f'{SPANS}[3].attributes[1].value.doubleValue: not a number: "nan"',
    ),
    (
        _attribute({"key": "k", "value": {"doubleValue": 10**400}}),
        f"{SPANS}[3].attributes[1].value.doubleValue: too large for a double",
    ),
    (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
        b'{"doubleValue": -1e999}}]}]}]}]}',
        f"{SPANS}[0].attributes[0].value.doubleValue: too large for a double",
    ),
    (
        _attribute({"key": "k", "value": {"doubleValue": False}}),
        f"{SPANS}[3].attributes[1].value.doubleValue: expected a number, got a boolean",
    ),
    (
        _attribute({"key": "k", "value": {"bytesValue": "not base64!"}}),
        f'{SPANS}[3].attributes[1].value.bytesValue: not base64: "not base64!"',
    ),
    (
        _attribute({"key": "k", "value": {"arrayValue": []}}),
        f"{SPANS}[3].attributes[1].value.arrayValue: expected an ArrayValue object, got an array",
    ),
    (
        _attribute({"key": "k", "value": {"arrayValue": {"values": [{"intValue": "1"}, 2]}}}),
        f"{SPANS}[3].attributes[1].value.arrayValue.values[1]: expected an AnyValue object",
    ),
    (
        _attribute(
            {
                "key": "k",
                "value": {"kvlistValue": {"values": [{"key": "x", "value": {"doubleValue": "?"}}]}},
            }
        ),
        f"{SPANS}[3].attributes[1].value.kvlistValue.values[0].value.doubleValue: not a number",
    ),
    (
        {
            "resourceSpans": [
                {"resource": {"attributes": [{"key": "k", "value": {"intValue": "-"}}]}}
            ]
        },
        "resourceSpans[0].resource.attributes[0].value.intValue: not an integer",
    ),
    (
        {"resourceSpans": [{"resource": {"droppedAttributesCount": -1}}]},
        "resourceSpans[0].resource.droppedAttributesCount: -1 is out of range",
    ),
    ({"resourceSpans": [{"resource": 1}]}, "resourceSpans[0].resource: expected a Resource"),
    ({"resourceSpans": [{"schemaUrl": 1}]}, "resourceSpans[0].schemaUrl: expected a string"),
    (
        {"resourceSpans": [{"scopeSpans": [{"scope": {"name": 1}}]}]},
        "resourceSpans[0].scopeSpans[0].scope.name: expected a string, got a number",
    ),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_requests_say_what_is_wrong_and_where(document, message):
    assert message in _error(document)


def test_values_may_not_nest_without_end():
    value: dict[str, Any] = {"intValue": "1"}
    for _ in range(MAX_VALUE_NESTING):
        value = {"arrayValue": {"values": [value]}}
    (span,) = parse_json(_body(_attribute({"key": "deep", "value": value})))[3:]
    assert span.attributes["deep"] is not None
    too_deep = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    message = _error(_attribute({"key": "deep", "value": too_deep}))
    assert message.startswith(f"{SPANS}[3].attributes[1].value.kvlistValue.values[0].value")
    assert message.endswith(f"arrayValue: values nest deeper than {MAX_VALUE_NESTING} levels")


# --- the answer ----------------------------------------------------------------------------------


def test_export_response_json_is_the_otlp_json_response():
    assert export_response_json(0) == b"{}"
    assert export_response_json(0, "ignored without rejections") == b"{}"
    body = export_response_json(2, 'span 01: bad "x"')
    assert json.loads(body) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": 'span 01: bad "x"'}
    }
    response = Parse(body, ExportTraceServiceResponse())
    assert response.partial_success.rejected_spans == 2
    assert json.loads(export_response_json(1)) == {"partialSuccess": {"rejectedSpans": "1"}}
