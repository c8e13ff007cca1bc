"""P402's hand-made OTLP bytes decode, with opentelemetry-proto, into exactly the events.

The encoder caches encoded attributes (one block for the call's common ones, one field per
repeated value): events that share some values and differ in others must still each decode
to their own attributes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from p402.instrumentation._otlp import RequestFrame, encode_span

SCOPE = ("p402.instrumentation", "1.2.3")
RESOURCE = {"service.name": "billing", "service.instance.id": "i-1", "process.pid": 42}


def value_of(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    assert kind is not None
    if kind == "array_value":
        return tuple(value_of(item) for item in any_value.array_value.values)
    return getattr(any_value, kind)


def attributes_of(message: Any) -> dict[str, Any]:
    """The attributes of a span or a resource."""
    return {kv.key: value_of(kv.value) for kv in message.attributes}


def decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def event(number: int, *, error: bool = False, parent: bool = False) -> dict[str, Any]:
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.stream": number % 2 == 0,
        "server.port": 443,
        "p402.attempt": number % 3,
        "p402.owner.department": ["legal", "finance"][number % 2],
    }
    specific = {
        "p402.event.id": f"01a20718-cfcb-7000-8000-{number:012d}",
        "http.response.status_code": 500 if error else 200,
        "gen_ai.response.id": "chatcmpl-" + "x" * (number * 40),  # past one length byte
        "gen_ai.response.finish_reasons": ("stop", "length")[: 1 + number % 2],
        "gen_ai.usage.input_tokens": number * 1000,
        "gen_ai.usage.cost.amount": f"0.00{number}",
        "p402.flag": True,
        "p402.negative": -number,
        "p402.ratio": number / 4,
        "p402.list": ["a", str(number)],
    }
    return {
        "trace_id": number.to_bytes(16, "big"),
        "span_id": (number + 1).to_bytes(8, "big"),
        "parent_span_id": (number + 2).to_bytes(8, "big") if parent else None,
        "name": f"chat gpt-5-mini-{number % 2}",
        "start_ns": 1_762_790_400_000_000_000 + number,
        "end_ns": 1_762_790_400_500_000_000 + number,
        "common": common,
        "attributes": specific,
        "error": error,
    }


def test_a_batch_decodes_into_its_resource_scope_and_every_event() -> None:
    events = [event(n, error=n == 3, parent=n % 2 == 1) for n in range(1, 8)]
    frame = RequestFrame(RESOURCE, SCOPE)
    request = decode(frame.encode([encode_span(**e) for e in events]))

    (resource_spans,) = request.resource_spans
    assert attributes_of(resource_spans.resource) == RESOURCE
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == SCOPE
    assert len(scope_spans.spans) == len(events)
    for expected, span in zip(events, scope_spans.spans, strict=True):
        assert span.trace_id == expected["trace_id"]
        assert span.span_id == expected["span_id"]
        assert span.parent_span_id == (expected["parent_span_id"] or b"")
        assert span.name == expected["name"]
        assert span.kind == Span.SPAN_KIND_CLIENT
        assert span.start_time_unix_nano == expected["start_ns"]
        assert span.end_time_unix_nano == expected["end_ns"]
        assert span.flags == 1
        want_status = Status.STATUS_CODE_ERROR if expected["error"] else Status.STATUS_CODE_UNSET
        assert span.status.code == want_status
        want = {**expected["common"], **expected["attributes"]}
        want["p402.list"] = tuple(want["p402.list"])
        assert attributes_of(span) == want
        assert [kv.key for kv in span.attributes] == list(want)  # common first, in order


def test_the_same_event_encodes_to_the_same_bytes_again() -> None:
    first = encode_span(**event(5))
    assert encode_span(**event(6)) != first
    assert encode_span(**event(5)) == first


def test_an_empty_batch_is_a_valid_request() -> None:
    request = decode(RequestFrame(RESOURCE, SCOPE).encode([]))
    assert (
        MessageToDict(request)["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == (SCOPE[0])
    )
