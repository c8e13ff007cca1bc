"""The receiver and query routes over HTTP: auth, tenancy, shapes and bad input."""

from __future__ import annotations

import gzip

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

PROTOBUF = {"content-type": "application/x-protobuf"}

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


def _post(client, key, body, **headers):
    return client.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "x-p402-api-key": key, **headers}
    )


def test_ingest_answers_an_otlp_response_and_stores_each_event_once(client, keys, payload):
    body = payload(EVENT, {"http.request.method": "GET"})
    for _ in range(3):
        response = _post(client, keys["ingest"], body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-protobuf"
        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 0
    events = client.get("/v1/events", headers={"authorization": f"Bearer {keys['read']}"})
    assert events.status_code == 200
    (event,) = events.json()["data"]
    assert event["id"] == EVENT["p402.event.id"]
    assert event["department"] == "legal"
    assert event["evidence_status"] == "pending"
    assert events.json()["next_cursor"] is None


def test_the_answer_counts_accepted_new_ignored_and_rejected_spans(client, keys, payload):
    bad = {**EVENT, "p402.event.id": "bad", "gen_ai.usage.input_tokens": -1}
    body = payload(EVENT, {"http.request.method": "GET"}, {"db.system": "postgresql"}, bad)
    counts = [
        {
            name.removeprefix("x-p402-"): int(value)
            for name, value in _post(client, keys["ingest"], body).headers.items()
            if name.startswith("x-p402-")
        }
        for _ in range(2)
    ]
    assert counts == [
        {"spans-accepted": 1, "events-inserted": 1, "spans-ignored": 2, "spans-rejected": 1},
        {"spans-accepted": 1, "events-inserted": 0, "spans-ignored": 2, "spans-rejected": 1},
    ]


def test_rejected_spans_are_reported_as_partial_success(client, keys, payload):
    bad = {**EVENT, "p402.event.id": "bad", "gen_ai.usage.input_tokens": -1}
    response = _post(client, keys["ingest"], payload(EVENT, bad))
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "gen_ai.usage.input_tokens" in answer.partial_success.error_message
    total = client.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()["total"]
    assert total["events"] == 1


def test_gzip_bodies_are_accepted(client, keys, payload):
    response = _post(
        client, keys["ingest"], gzip.compress(payload(EVENT)), **{"content-encoding": "gzip"}
    )
    assert response.status_code == 200
    total = client.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()["total"]
    assert total["events"] == 1


def test_spend_answers_groups_and_total_in_the_spec_shape(client, keys, payload):
    _post(
        client,
        keys["ingest"],
        payload(EVENT, {**EVENT, "p402.event.id": "second", "p402.owner.department": "sales"}),
    )
    response = client.get(
        "/v1/spend?group_by=department,model", headers={"x-p402-api-key": keys["read"]}
    )
    body = response.json()
    assert list(body["data"][0])[:6] == [
        "department",
        "model",
        "cost_usd",
        "events",
        "input_tokens",
        "output_tokens",
    ]
    assert {row["department"] for row in body["data"]} == {"legal", "sales"}
    assert body["total"]["events"] == 2
    assert body["total"]["cost_usd"] == "0.0010662"


def test_another_tenant_sees_nothing(client, keys, payload):
    _post(client, keys["ingest"], payload(EVENT))
    other = {"x-p402-api-key": keys["globex_read"]}
    assert client.get("/v1/events", headers=other).json()["data"] == []
    assert client.get("/v1/spend", headers=other).json()["total"]["events"] == 0
    # the same event id under another tenant is that tenant's own event
    _post(client, keys["globex_ingest"], payload(EVENT))
    assert len(client.get("/v1/events", headers=other).json()["data"]) == 1
    mine = client.get("/v1/events", headers={"x-p402-api-key": keys["read"]}).json()["data"]
    assert len(mine) == 1


def test_missing_or_invalid_keys_answer_401(client, payload):
    for headers in ({}, {"x-p402-api-key": "p402_nope"}, {"authorization": "Bearer nope"}):
        response = client.post(
            "/v1/traces", content=payload(EVENT), headers={**PROTOBUF, **headers}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/events").status_code == 401


def test_keys_without_the_right_role_answer_403(client, keys, payload):
    assert _post(client, keys["read"], payload(EVENT)).status_code == 403
    response = client.get("/v1/events", headers={"x-p402-api-key": keys["ingest"]})
    assert response.status_code == 403
    assert response.json() == {
        "error": {"code": "forbidden", "message": "this route needs a key with the read role"}
    }
    assert _post(client, keys["admin"], payload(EVENT)).status_code == 200


def test_bad_input_gets_its_status_and_the_server_stays_up(client, keys, payload):
    key = keys["ingest"]
    cases = [
        (_post(client, key, b"\x0a\xff\xff\xff\xff\x0fgarbage"), 400, "malformed_payload"),
        (
            _post(client, key, payload(EVENT), **{"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            _post(
                client,
                key,
                gzip.compress(b"\0" * (17 * 1024 * 1024)),
                **{"content-encoding": "gzip"},
            ),
            413,
            "payload_too_large",
        ),
        (_post(client, key, b"not gzip", **{"content-encoding": "gzip"}), 400, "malformed_payload"),
        (_post(client, key, b"x" * (17 * 1024 * 1024)), 413, "payload_too_large"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    assert client.get("/healthz").json() == {"status": "ok"}
    assert (
        client.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()["total"]["events"]
        == 0
    )


def test_query_parameters_are_validated_with_clear_errors(client, keys):
    headers = {"x-p402-api-key": keys["read"]}
    cases = {
        "/v1/spend?group_by=department,planet": "unknown dimension(s) planet",
        "/v1/events?from=yesterday": "from: not an ISO-8601",
        "/v1/events?limit=5000": "limit",
        "/v1/events?cursor=%21%21": "invalid cursor",
    }
    for url, message in cases.items():
        response = client.get(url, headers=headers)
        assert response.status_code == 400, url
        assert message in response.json()["error"]["message"], url


def test_openapi_schema_lists_the_routes(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/traces", "/v1/events", "/v1/spend"} <= set(paths)
    parameters = {p["name"] for p in paths["/v1/events"]["get"]["parameters"]}
    assert {"department", "model", "from", "to", "limit", "cursor"} <= parameters


def test_another_tenants_event_id_answers_404(client, keys, payload):
    _post(client, keys["ingest"], payload(EVENT))
    url = f"/v1/events/{EVENT['p402.event.id']}"
    mine = client.get(url, headers={"x-p402-api-key": keys["read"]})
    assert mine.status_code == 200
    assert mine.json()["department"] == "legal"
    theirs = client.get(url, headers={"x-p402-api-key": keys["globex_read"]})
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    unknown = client.get("/v1/events/nope", headers={"x-p402-api-key": keys["read"]})
    assert unknown.status_code == 404
