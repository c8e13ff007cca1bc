"""``POST /v1/events``: meter-only JSON events, the same rules as spans."""

from __future__ import annotations

import json

from sqlalchemy import inspect, text

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.keys import resolve_key
from p402.ledger.tenants import set_max_privacy_mode

EVENT = {
    "id": "hist-0001",
    "timestamp": "2026-11-20T09:30:00Z",
    "provider": "openai",
    "operation": "chat",
    "model_requested": "gpt-5-mini",
    "model_used": "gpt-5-mini-2025-08-07",
    "input_tokens": 1342,
    "output_tokens": 214,
    "cache_read_tokens": 1024,
    "cache_write_tokens": 0,
    "reasoning_tokens": 192,
    "department": "finance",
    "employee": "farid",
    "outcome": "accepted",
}


def _post(client, key, events):
    return client.post(
        "/v1/events",
        content=json.dumps(events),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )


def _events(client, key):
    return client.get("/v1/events", headers={"x-p402-api-key": key}).json()["data"]


def test_past_events_are_stored_once_and_costed_by_the_receiver(client, keys):
    for _ in range(2):
        response = _post(client, keys["ingest"], [EVENT])
        assert response.status_code == 200
    assert response.json() == {"accepted": 1, "inserted": 0}
    (event,) = _events(client, keys["read"])
    assert event["id"] == "hist-0001"
    assert event["timestamp"] == "2026-11-20T09:30:00.000Z"
    assert event["cost_usd"] == "0.0005331"
    assert event["cost_evidence"] == "computed"
    assert (event["department"], event["outcome"]) == ("finance", "accepted")


def test_an_event_read_from_the_api_can_be_sent_back_to_another_tenant(client, keys):
    assert _post(client, keys["ingest"], [EVENT]).status_code == 200
    (event,) = _events(client, keys["read"])
    assert {"original_cost_usd", "original_price_version", "receipt_id"} <= event.keys()
    response = _post(client, keys["globex_ingest"], [event])
    assert response.status_code == 200, response.text
    (copied,) = _events(client, keys["globex_read"])
    # the cost sent is the client's figure of the copy, equal to the receiver's own
    assert copied["client_cost_usd"] == event["cost_usd"] == copied["cost_usd"]
    assert not copied["cost_mismatch"]
    set_by_the_ledger = {"receipt_id", "client_cost_usd"}
    assert {k: v for k, v in copied.items() if k not in set_by_the_ledger} == {
        k: v for k, v in event.items() if k not in set_by_the_ledger
    }


def test_an_events_trace_context_is_kept(client, keys):
    traced = {
        **EVENT,
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
    }
    assert _post(client, keys["ingest"], [traced]).status_code == 200
    (event,) = _events(client, keys["read"])
    assert (event["trace_id"], event["span_id"]) == (traced["trace_id"], traced["span_id"])


def test_a_reported_cost_is_kept_when_the_model_cannot_be_priced(client, keys):
    reported = {
        **EVENT,
        "id": "hist-0002",
        "model_used": "in-house-llm",
        "model_requested": None,
        "provider": "vllm",
        "cost_usd": "0.0100",
        "cost_evidence": "provider_reported",
    }
    assert _post(client, keys["ingest"], [reported]).status_code == 200
    (event,) = _events(client, keys["read"])
    assert event["cost_usd"] == "0.01"
    assert event["cost_evidence"] == "provider_reported"


def test_one_bad_event_rejects_the_batch_and_nothing_is_written(client, keys):
    bad = [
        EVENT,
        {**EVENT, "id": "b1", "timestamp": "yesterday"},
        {**EVENT, "id": "b2", "input_tokens": -3},
        {**EVENT, "id": "b3", "cost_usd": 0.01},
        {**EVENT, "id": "b4", "planet": "mars"},
        {**EVENT, "id": ""},
        {**EVENT, "id": "b6", "outcome": {}},
        {**EVENT, "id": "b7", "department": ["finance"]},
        {**EVENT, "id": "b8", "task_type": {"kind": "triage"}},
        {**EVENT, "id": "b9", "trace_id": "5B8EFFF798038103D269B633813FC60C", "span_id": "e" * 16},
        {**EVENT, "id": "b10", "span_id": "eee19b7ec3c1b174"},
    ]
    response = _post(client, keys["ingest"], bad)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    for fragment in (
        "event 1: timestamp",
        "event 2: gen_ai.usage.input_tokens",
        "event 3: cost_usd",
        "event 4: unknown field(s) planet",
        "event 5: id",
        "event 6: outcome {} is not one of",
        "event 7: department must be a single value, not a JSON array",
        "event 8: task_type must be a single value, not a JSON object",
        "event 9: trace_id must be 32 lowercase hex digits",
        "event 10: trace_id and span_id go together",
    ):
        assert fragment in message
    assert _events(client, keys["read"]) == []
    assert _post(client, keys["ingest"], {"not": "a list"}).status_code == 400
    response = client.post(
        "/v1/events",
        content=b"[{",
        headers={"x-p402-api-key": keys["ingest"], "content-type": "application/json"},
    )
    assert response.json()["error"]["code"] == "invalid_events"


def test_events_need_an_ingest_key_and_json(client, keys):
    assert _post(client, keys["read"], [EVENT]).status_code == 403
    response = client.post(
        "/v1/events",
        content=b"[]",
        headers={"x-p402-api-key": keys["ingest"], "content-type": "text/csv"},
    )
    assert response.status_code == 415


def test_content_beyond_the_tenants_privacy_mode_never_reaches_the_database(client, keys, engine):
    canary = "CANARY-7e21 merger with Initech"
    span_like = {**EVENT, "id": "with-content", "privacy_mode": "full_trace"}
    # Events carry no content fields; the canary can only arrive as an unknown field.
    response = _post(client, keys["ingest"], [{**span_like, "prompt": canary}])
    assert response.status_code == 400
    tenant = resolve_key(engine, keys["ingest"])
    assert tenant is not None
    set_max_privacy_mode(engine, tenant.tenant_id, PrivacyMode.METADATA_ONLY)
    assert _post(client, keys["ingest"], [span_like]).status_code == 200
    (event,) = _events(client, keys["read"])
    assert event["privacy_mode"] == "metadata_only"  # capped to the tenant's maximum
    with engine.connect() as connection:
        dump = " ".join(
            repr(tuple(row))
            for table in inspect(engine).get_table_names()
            for row in connection.execute(text(f'SELECT * FROM "{table}"'))
        )
    assert canary not in dump
