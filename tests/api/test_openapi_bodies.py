"""``/schema`` documents the request body of every route that reads one, with the media types
the route reads, the vocabulary its handler checks against and the errors it answers; and the
bodies fuzzing found to break a route answer a 4xx in the one error shape."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from p402.api import create_app
from p402.instrumentation.tiers import ModelTier
from p402.instrumentation.vocabulary import (
    OWNER_DIMENSIONS,
    TOTAL_EVENTS_HEADER,
    BudgetPeriod,
    BudgetScope,
    CapAction,
    Outcome,
    PrivacyMode,
    RoutingPreference,
    UsageEvidence,
)
from p402.ledger.database import connect, migrate
from p402.ledger.keys import Role
from p402.ledger.models import IMPORT_SOURCE_FIELDS
from p402.ledger.provider_reports import PROVIDERS
from p402.receiver.meter_events import _ATTRIBUTE_OF, _READ_ONLY, _SPECIAL

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
BODIES = {
    ("post", "/v1/traces"): {PROTOBUF, JSON},
    ("post", "/v1/events"): {JSON},
    ("post", "/v1/outcomes"): {JSON},
    ("post", "/v1/authorize"): {JSON},
    ("post", "/v1/keys"): {JSON},
    ("post", "/v1/imports/{provider}"): {JSON, "text/csv"},
    ("post", "/v1/anomalies/{anomaly_id}/review"): {JSON},
    ("put", "/v1/budgets"): {JSON},
    ("put", "/v1/policies"): {JSON},
    ("put", "/v1/webhooks"): {JSON},
    ("put", "/v1/settings"): {JSON},
    ("put", "/v1/imports/mappings"): {JSON},
}
"""Every operation that reads a request body, and the media types it reads."""


@pytest.fixture
def document(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The OpenAPI document the app serves (it does not depend on the database)."""
    engine = connect(f"sqlite:///{tmp_path / 'p402.db'}")
    migrate(engine)
    with TestClient(create_app(engine, scheduler=False)) as client:
        response = client.get("/schema/openapi.json")
        assert response.status_code == 200
        yield response.json()
    engine.dispose()


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


def _body_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = _operation(document, method, path)["requestBody"]["content"][JSON][
        "schema"
    ]
    return schema


def _item(schema: dict[str, Any]) -> dict[str, Any]:
    """The object of a body that is one object, a list of them, or either."""
    if schema.get("type") == "object":
        return schema
    if schema.get("type") == "array":
        return _item(schema["items"])
    for branch in schema.get("anyOf", []):
        if branch.get("type") in ("object", "array"):
            return _item(branch)
    raise AssertionError(f"no object in {schema}")


def _enum(schema: dict[str, Any]) -> list[Any]:
    """The values a property may take, null aside."""
    for branch in schema.get("anyOf", [schema]):
        if "enum" in branch:
            return list(branch["enum"])
    raise AssertionError(f"no enum in {schema}")


def test_every_operation_that_reads_a_body_documents_it_with_its_media_types(document):
    documented = {
        (method, path): set(operation["requestBody"]["content"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    assert documented == BODIES
    for method, path in BODIES:
        body = _operation(document, method, path)["requestBody"]
        assert body["required"] is True
        assert all(content["schema"] for content in body["content"].values())


def test_every_operation_is_named_and_described_after_its_own_handler(document):
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations:
        assert "Asynccallable" not in operation["operationId"] + operation["summary"], (
            method,
            path,
        )
        assert "thread pool" not in operation.get("description", ""), (method, path)
    events = _operation(document, "get", "/v1/events")
    assert (events["summary"], events["operationId"]) == ("GetEvents", "V1EventsGetEvents")
    assert events["description"].startswith("Economic events")


def test_an_otlp_export_is_documented_as_protobuf_bytes_or_otlp_json(document):
    content = _operation(document, "post", "/v1/traces")["requestBody"]["content"]
    assert content[PROTOBUF]["schema"] == {
        "type": "string",
        "format": "binary",
        "description": content[PROTOBUF]["schema"]["description"],
    }
    request = content[JSON]["schema"]
    span = request["properties"]["resourceSpans"]["items"]["properties"]["scopeSpans"]["items"][
        "properties"
    ]["spans"]["items"]
    assert {"traceId", "spanId", "startTimeUnixNano", "attributes"} <= set(span["properties"])
    answer = _operation(document, "post", "/v1/traces")["responses"]["200"]["content"]
    assert set(answer) == {PROTOBUF, JSON}


def test_answers_in_other_media_types_are_documented_as_the_server_sends_them(
    document, client, keys
):
    export = _operation(document, "get", "/v1/export")["responses"]["200"]
    headers = {"x-p402-api-key": keys["read"]}
    for export_format in ("csv", "focus", "bundle"):
        response = client.get("/v1/export", params={"format": export_format}, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] in export["content"]
        assert TOTAL_EVENTS_HEADER in response.headers
    assert set(export["content"]) == {"text/csv", "application/zip"}
    assert TOTAL_EVENTS_HEADER in export["headers"]
    receipt = _operation(document, "get", "/v1/receipts/{receipt_id}")["responses"]["200"]
    assert set(receipt["content"]) == {"application/json", "application/pdf", "text/csv"}


def test_the_bodies_speak_the_one_vocabulary(document):
    def values(kind: Any) -> list[str]:
        return [str(member) for member in kind]

    event = _item(_body_schema(document, "post", "/v1/events"))
    # exactly the fields the meter-event reader takes (the rest it refuses)
    assert set(event["properties"]) == set(_ATTRIBUTE_OF) | _READ_ONLY | _SPECIAL
    assert event["required"] == ["id", "timestamp"]
    assert event["additionalProperties"] is False
    assert _enum(event["properties"]["usage_evidence"]) == values(UsageEvidence)
    assert _enum(event["properties"]["outcome"]) == values(Outcome)

    outcome = _item(_body_schema(document, "post", "/v1/outcomes"))
    assert _enum(outcome["properties"]["outcome"]) == values(Outcome)

    budget = _item(_body_schema(document, "put", "/v1/budgets"))
    assert _enum(budget["properties"]["scope"]) == values(BudgetScope)
    assert _enum(budget["properties"]["period"]) == values(BudgetPeriod)
    assert _enum(budget["properties"]["action_at_cap"]) == values(CapAction)
    assert budget["required"] == ["scope", "cap_usd"]

    policy = _item(_body_schema(document, "put", "/v1/policies"))
    assert _enum(policy["properties"]["routing"]) == values(RoutingPreference)

    owner = _body_schema(document, "post", "/v1/authorize")["properties"]["owner"]
    assert list(_item(owner)["properties"]) == list(OWNER_DIMENSIONS)

    settings = _body_schema(document, "put", "/v1/settings")["properties"]
    assert _enum(settings["max_privacy_mode"]) == values(PrivacyMode)
    assert _enum(settings["model_tiers"]["additionalProperties"]) == values(ModelTier)

    assert _enum(_body_schema(document, "post", "/v1/keys")["properties"]["role"]) == values(Role)

    rule = _item(_body_schema(document, "put", "/v1/imports/mappings"))
    assert _enum(rule["properties"]["provider"]) == list(PROVIDERS)
    assert _enum(rule["properties"]["field"]) == list(IMPORT_SOURCE_FIELDS)
    (provider,) = _operation(document, "post", "/v1/imports/{provider}")["parameters"]
    assert provider["schema"]["enum"] == list(PROVIDERS)


ERRORS = {
    ("post", "/v1/traces"): {"415"},
    ("post", "/v1/events"): {"415"},
    ("post", "/v1/outcomes"): {"404", "415"},
    ("post", "/v1/imports/{provider}"): {"404", "415", "422"},
    ("put", "/v1/settings"): {"422"},
}
"""The errors a body brings besides 400 and 413 (too large), which every route with a body
answers."""


@pytest.mark.parametrize(("method", "path"), sorted(BODIES))
def test_the_errors_a_body_can_bring_are_documented_in_the_one_error_shape(document, method, path):
    statuses = {"400", "413", *ERRORS.get((method, path), ())}
    responses = _operation(document, method, path)["responses"]
    assert statuses <= set(responses)
    for status in statuses:
        schema = responses[status]["content"][JSON]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def _send(client: TestClient, key: str, method: str, path: str, body: bytes) -> Any:
    path = path.replace("{provider}", "openai").replace("{anomaly_id}", "1")
    headers = {"x-p402-api-key": key, "content-type": JSON}
    return client.request(method.upper(), path, content=body, headers=headers)


def test_a_body_that_is_not_utf8_json_is_a_400_in_the_one_error_shape(client, keys):
    for method, path in sorted(BODIES):
        response = _send(client, keys["admin"], method, path, b'{"name": "\xff\xfe"}')
        assert response.status_code == 400, (method, path, response.text)
        assert set(response.json()["error"]) == {"code", "message"}


def test_a_body_nested_too_deeply_is_a_400_in_the_one_error_shape(client, keys):
    # At the interpreter's default recursion limit, decoding it raises RecursionError; under a
    # raised limit it would overflow the C stack instead, in any decoder.
    sys.setrecursionlimit(1000)
    nested = b"[" * 100_000 + b"]" * 100_000
    for method, path in sorted(BODIES):
        response = _send(client, keys["admin"], method, path, nested)
        assert response.status_code == 400, (method, path, response.text)
        assert set(response.json()["error"]) == {"code", "message"}


NUL = "a\x00b"
EARLY = "0001-01-01T00:00:00+05:00"
LATE = "9999-12-31T23:59:59-05:00"
RATE = {"model": "m", "input_per_mtok": "1", "output_per_mtok": "2"}


def _openai_usage(result: dict[str, Any], start_time: int = 0) -> dict[str, Any]:
    usage = {"object": "organization.usage.completions.result", **result}
    bucket = {"start_time": start_time, "end_time": start_time + 86_400, "results": [usage]}
    return {"data": [bucket]}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        # text the ledger cannot store (PostgreSQL refuses NUL)
        ("put", "/v1/budgets", {"scope": "department", "name": NUL, "cap_usd": "1"}, 400),
        ("put", "/v1/policies", {"department": NUL}, 400),
        ("post", "/v1/authorize", {"event_id": "e1", "model": NUL, "max_cost_usd": "1"}, 400),
        ("put", "/v1/webhooks", [{"url": f"https://example.com/{NUL}"}], 400),
        ("put", "/v1/settings", {"model_tiers": {NUL: "economy"}}, 422),
        (
            "put",
            "/v1/imports/mappings",
            [{"provider": "openai", "field": "project_id", "value": NUL}],
            400,
        ),
        ("post", "/v1/anomalies/{anomaly_id}/review", {"status": "reviewed", "note": NUL}, 400),
        # a cap past the ledger's 64-bit column
        ("put", "/v1/budgets", {"scope": "organization", "cap_usd": "1" + "0" * 30}, 400),
        # a URL that urllib cannot split
        ("put", "/v1/settings", {"webhooks": [{"url": "http://[::1/"}]}, 422),
        ("put", "/v1/webhooks", [{"url": "http://[::1/"}], 400),
        # names longer than the ledger's columns
        (
            "put",
            "/v1/imports/mappings",
            [{"provider": "openai", "field": "project_id", "value": "v" * 201}],
            400,
        ),
        ("post", "/v1/imports/openai", _openai_usage({"model": "m" * 201}), 400),
        # figures past the ledger's 64-bit columns
        ("post", "/v1/imports/openai", _openai_usage({"input_tokens": 10**20}), 400),
        ("post", "/v1/imports/openai", _openai_usage({}, start_time=10**17), 400),
        # moments UTC cannot show (before year 1, after year 9999)
        ("post", "/v1/events", [{"id": "e1", "timestamp": EARLY, "model_used": "m"}], 400),
        ("put", "/v1/settings", {"price_overrides": [{**RATE, "valid_from": EARLY}]}, 422),
        ("put", "/v1/settings", {"price_overrides": [{**RATE, "valid_to": LATE}]}, 422),
    ],
)
def test_bodies_fuzzing_found_answer_a_4xx_not_a_server_error(
    client, keys, method, path, body, status
):
    response = _send(client, keys["admin"], method, path, json.dumps(body).encode())
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sessions?employee=a%00b",
        "/v1/sessions?department=%00",
        "/v1/events?project=a%00b",
        "/v1/spend?model=a%00b",
        "/v1/observations?task_type=a%00b",
    ],
)
def test_a_query_filter_holding_nul_is_a_400_not_a_server_error(client, keys, path):
    response = client.get(path, headers={"x-p402-api-key": keys["admin"]})
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v1/events?outcome=banana", "outcome"),
        ("/v1/events?privacy_mode=everything", "privacy_mode"),
        ("/v1/spend?group_by=department&policy_result=maybe", "policy_result"),
        ("/v1/export?usage_evidence=guessed", "usage_evidence"),
        ("/v1/events?cost_evidence=vibes", "cost_evidence"),
        ("/v1/events?evidence_status=notarised", "evidence_status"),
        ("/v1/events?from=2026-11-02&to=2026-11-01", "from must be before to"),
        # an empty owner: none is stored (a missing one is none), where the rollups store ''
        ("/v1/events?department=", "department"),
        ("/v1/spend?group_by=model&project=", "project"),
        ("/v1/export?employee=", "employee"),
        ("/v1/sessions?department=", "department"),
        ("/v1/observations?task_type=", "task_type"),
        ("/v1/sessions?from=2026-11-02&to=2026-11-01", "from must be before to"),
        ("/v1/reconciliation?from=2026-11-02&to=2026-11-01", "from must be before to"),
        ("/v1/reconciliation?provider=openia", "provider must be one of openai, anthropic"),
    ],
)
def test_a_filter_no_event_can_match_is_a_400_not_an_empty_answer(client, keys, path, named):
    response = client.get(path, headers={"x-p402-api-key": keys["read"]})
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]


def test_enumerated_filters_are_documented_with_their_values(document):
    parameters = {p["name"]: p for p in _operation(document, "get", "/v1/events")["parameters"]}
    assert {"$ref": "#/components/schemas/Outcome"} in parameters["outcome"]["schema"]["oneOf"]
    values = document["components"]["schemas"]["Outcome"]["enum"]
    assert sorted(values) == sorted(outcome.value for outcome in Outcome)
