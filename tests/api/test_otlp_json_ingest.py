"""``POST /v1/traces`` with OTLP/JSON: stored like protobuf, answered in JSON, refused whole."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

JSON = {"content-type": "application/json"}

EVENT = {
    "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f3",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.response.model": "gpt-5-mini-2025-08-07",
    "gen_ai.usage.input_tokens": 1342,
    "gen_ai.usage.output_tokens": 214,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.reasoning.output_tokens": 192,
    "p402.owner.department": "legal",
    "p402.privacy.mode": "metadata_only",
}
SECOND = {**EVENT, "p402.event.id": "second", "p402.owner.department": "sales"}

_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: base64.b64decode(value).hex() if key in _ID_FIELDS else _hex_ids(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    return node


def _document(protobuf: bytes, *, snake: bool = False) -> dict[str, Any]:
    """The OTLP/JSON of a protobuf export request: the reference mapping, ids in hex."""
    request = ExportTraceServiceRequest.FromString(protobuf)
    text = MessageToJson(request, use_integers_for_enums=True, preserving_proto_field_name=snake)
    return _hex_ids(json.loads(text))  # type: ignore[no-any-return]


def _json(protobuf: bytes, *, snake: bool = False) -> bytes:
    return json.dumps(_document(protobuf, snake=snake)).encode()


def _post(client, key, body, **headers):
    return client.post(
        "/v1/traces", content=body, headers={**JSON, "x-p402-api-key": key, **headers}
    )


def _events(client, keys) -> list[dict[str, Any]]:
    response = client.get("/v1/events", headers={"authorization": f"Bearer {keys['read']}"})
    assert response.status_code == 200
    return response.json()["data"]  # type: ignore[no-any-return]


def test_a_json_export_is_stored_once_and_answered_in_json(client, keys, payload):
    body = _json(payload(EVENT, {"http.request.method": "GET"}))
    for _ in range(3):
        response = _post(client, keys["ingest"], body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {}
    (event,) = _events(client, keys)
    assert event["id"] == EVENT["p402.event.id"]
    assert event["department"] == "legal"
    assert event["input_tokens"] == 1342


def test_json_and_protobuf_of_one_request_are_one_event(client, keys, payload):
    protobuf = payload(EVENT)
    _post(client, keys["ingest"], _json(protobuf))
    response = _post(client, keys["ingest"], protobuf, **{"content-type": "application/x-protobuf"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert len(_events(client, keys)) == 1


def test_rejected_spans_are_a_json_partial_success(client, keys, payload):
    bad = {**EVENT, "p402.event.id": "bad", "gen_ai.usage.input_tokens": -1}
    response = _post(client, keys["ingest"], _json(payload(EVENT, bad)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "gen_ai.usage.input_tokens" in partial["errorMessage"]
    assert len(_events(client, keys)) == 1


def test_gzip_json_and_a_charset_parameter_are_accepted(client, keys, payload):
    response = _post(
        client,
        keys["ingest"],
        gzip.compress(_json(payload(EVENT, SECOND))),
        **{"content-encoding": "gzip", "content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert {event["department"] for event in _events(client, keys)} == {"legal", "sales"}


def test_proto_field_names_are_accepted(client, keys, payload):
    body = _json(payload(EVENT), snake=True)
    assert b'"resource_spans"' in body and b'"start_time_unix_nano"' in body
    response = _post(client, keys["ingest"], body)
    assert response.status_code == 200, response.text
    (event,) = _events(client, keys)
    assert event["id"] == EVENT["p402.event.id"]


def test_malformed_json_is_refused_whole_and_nothing_is_stored(client, keys, payload):
    good_then_bad = _document(payload(EVENT, SECOND))
    spans = good_then_bad["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[1]["traceId"] = base64.b64encode(bytes.fromhex(spans[1]["traceId"])).decode()
    cases = [
        (b'{"resourceSpans": [{"scopeSpans": ', "not JSON"),
        (b"[]", "expected a JSON object, got an array"),
        (
            json.dumps(good_then_bad).encode(),
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: not 32 hex digits",
        ),
        (gzip.compress(b'{"resourceSpans": 7}'), "resourceSpans: expected an array"),
    ]
    for body, message in cases:
        headers = {"content-encoding": "gzip"} if body[:2] == b"\x1f\x8b" else {}
        response = _post(client, keys["ingest"], body, **headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "malformed_payload"
        assert message in error["message"]
    assert _events(client, keys) == []
    assert client.get("/healthz").json() == {"status": "ok"}


def test_size_limits_hold_for_json(client, keys):
    bomb = gzip.compress(b" " * (17 * 1024 * 1024))
    for body, headers in [
        (bomb, {"content-encoding": "gzip"}),
        (b" " * (17 * 1024 * 1024), {}),
    ]:
        response = _post(client, keys["ingest"], body, **headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    assert _events(client, keys) == []
