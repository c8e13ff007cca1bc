"""``GET|PUT /v1/settings`` over HTTP on both databases: round trip, partial and all-or-nothing
updates, validation, secrets never shown twice, roles and tenancy, and the settings' effect."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text
from tests.api.conftest import GENAI_EVENT

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.keys import resolve_key
from p402.ledger.tenants import (
    IngestSettings,
    fingerprint_key_id,
    ingest_settings,
    signing_key_id,
)

OVERRIDE = {
    "model": "gpt-5-mini*",
    "provider": "openai",
    "input_per_mtok": "1",
    "output_per_mtok": "2.50",
    "valid_from": "2026-01-01",
}
HOOK = {"url": "https://hooks.example.com/p402/T0KEN", "secret": "s" * 20}
FULL = {
    "max_privacy_mode": "fingerprint_only",
    "fingerprint_key": "ab" * 32,
    "price_overrides": [OVERRIDE],
    "model_tiers": {"in-house-llm": "economy", "gpt-5-mini": "premium"},
    "webhooks": [HOOK],
}


def _put(client, key, body):
    return client.put(
        "/v1/settings",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )


def _get(client, key):
    response = client.get("/v1/settings", headers={"x-p402-api-key": key})
    assert response.status_code == 200, response.text
    return response.json()


def test_settings_round_trip_without_showing_secrets(client, keys):
    response = _put(client, keys["admin"], FULL)
    assert response.status_code == 200, response.text
    put_answer = response.json()
    assert "key" not in put_answer["fingerprint_key"]  # a key the tenant gave is not echoed
    assert put_answer["webhooks"][0]["secret"] == HOOK["secret"]  # shown once, as set
    admin_view = _get(client, keys["admin"])
    assert admin_view["tenant"] == "acme"
    assert admin_view["max_privacy_mode"] == "fingerprint_only"
    assert admin_view["fingerprint_key"] == {"set": True, "key_id": fingerprint_key_id("ab" * 32)}
    (override,) = admin_view["price_overrides"]
    assert {k: override[k] for k in OVERRIDE if k != "valid_from"} == {
        **{k: v for k, v in OVERRIDE.items() if k != "valid_from"},
        "output_per_mtok": "2.5",
    }
    assert override["valid_from"] == "2026-01-01T00:00:00.000Z"
    assert override["valid_to"] is None
    assert admin_view["model_tiers"] == {"gpt-5-mini": "premium", "in-house-llm": "economy"}
    (hook,) = admin_view["webhooks"]
    assert hook["url"] == HOOK["url"] and "secret" not in hook
    assert json.dumps(admin_view).count("ab" * 32) == 0
    reader_view = _get(client, keys["read"])
    assert reader_view["webhooks"][0]["host"] == "hooks.example.com"
    assert "T0KEN" not in json.dumps(reader_view)
    assert {k: v for k, v in reader_view.items() if k != "webhooks"} == {
        k: v for k, v in admin_view.items() if k != "webhooks"
    }


def test_settings_take_effect_where_they_are_used(client, keys, engine):
    _put(client, keys["admin"], FULL)
    tenant_id = resolve_key(engine, keys["read"]).tenant_id
    assert ingest_settings(engine, tenant_id) == IngestSettings(
        PrivacyMode.FINGERPRINT_ONLY, bytes.fromhex("ab" * 32), signing_key=None
    )
    event = {
        "id": "priced-by-override",
        "timestamp": "2026-11-20T09:30:00Z",
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini-2025-08-07",
        "input_tokens": 1000,
        "output_tokens": 400,
    }
    client.post(
        "/v1/events",
        content=json.dumps([event]),
        headers={"x-p402-api-key": keys["ingest"], "content-type": "application/json"},
    )
    stored = client.get("/v1/events/priced-by-override", headers={"x-p402-api-key": keys["read"]})
    # 1000 x 1 USD/M + 400 x 2.5 USD/M, at the negotiated rates
    assert stored.json()["cost_usd"] == "0.002"
    override_id = _get(client, keys["read"])["price_overrides"][0]["id"]
    assert stored.json()["price_version"] == f"tenant-rates {override_id}"


def test_rotating_the_fingerprint_key_shows_the_new_key_once(client, keys, engine):
    before = _get(client, keys["read"])["fingerprint_key"]["key_id"]
    answer = _put(client, keys["admin"], {"fingerprint_key": "rotate"}).json()["fingerprint_key"]
    assert len(answer["key"]) == 64
    assert answer["key_id"] == fingerprint_key_id(answer["key"]) != before
    tenant_id = resolve_key(engine, keys["read"]).tenant_id
    assert ingest_settings(engine, tenant_id).fingerprint_key == bytes.fromhex(answer["key"])
    shown = _get(client, keys["admin"])["fingerprint_key"]
    assert shown == {"set": True, "key_id": answer["key_id"]}


def test_a_signing_key_is_set_rotated_shown_once_and_removed(client, keys, engine):
    tenant_id = resolve_key(engine, keys["read"]).tenant_id
    assert _get(client, keys["read"])["signing_key"] == {"set": False, "key_id": None}
    assert ingest_settings(engine, tenant_id).signing_key is None

    answer = _put(client, keys["admin"], {"signing_key": "rotate"}).json()["signing_key"]
    assert len(answer["key"]) == 64 and answer["key_id"] == signing_key_id(answer["key"])
    assert ingest_settings(engine, tenant_id).signing_key == answer["key"].encode()
    assert _get(client, keys["read"])["signing_key"] == {"set": True, "key_id": answer["key_id"]}

    given = _put(client, keys["admin"], {"signing_key": "CD" * 32}).json()["signing_key"]
    assert "key" not in given  # given, not generated: not shown back
    assert ingest_settings(engine, tenant_id).signing_key == ("cd" * 32).encode()

    assert _put(client, keys["admin"], {"max_privacy_mode": "full_trace"}).status_code == 200
    assert ingest_settings(engine, tenant_id).signing_key == ("cd" * 32).encode()  # kept

    removed = _put(client, keys["admin"], {"signing_key": None}).json()["signing_key"]
    assert removed == {"set": False, "key_id": None}
    assert ingest_settings(engine, tenant_id).signing_key is None

    bad = _put(client, keys["admin"], {"signing_key": "short"})
    assert bad.status_code == 422 and "signing_key" in bad.json()["error"]["message"]
    assert _put(client, keys["admin"], {"fingerprint_key": None}).status_code == 422


def test_an_update_changes_only_the_settings_it_names(client, keys):
    _put(client, keys["admin"], FULL)
    before = _get(client, keys["admin"])
    response = _put(client, keys["admin"], {"max_privacy_mode": "redacted_trace"})
    assert response.status_code == 200
    after = _get(client, keys["admin"])
    assert after["max_privacy_mode"] == "redacted_trace"
    assert {k: v for k, v in after.items() if k != "max_privacy_mode"} == {
        k: v for k, v in before.items() if k != "max_privacy_mode"
    }
    # tiers merge (null removes one); an identical override keeps its id
    _put(
        client,
        keys["admin"],
        {"model_tiers": {"gpt-5-mini": None, "gpt-5": "premium"}, "price_overrides": [OVERRIDE]},
    )
    again = _get(client, keys["admin"])
    assert again["model_tiers"] == {"gpt-5": "premium", "in-house-llm": "economy"}
    assert again["price_overrides"] == before["price_overrides"]
    _put(client, keys["admin"], {"price_overrides": [], "webhooks": []})
    emptied = _get(client, keys["admin"])
    assert emptied["price_overrides"] == [] and emptied["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "JSON is malformed"),
        ([FULL], 400, "Expected `object`"),
        ({"colour": "blue"}, 422, "unknown setting(s) colour"),
        ({"max_privacy_mode": "everything"}, 422, "max_privacy_mode"),
        ({"fingerprint_key": "tooshort"}, 422, "64 hex digits"),
        ({"model_tiers": {"gpt-5": "luxury"}}, 422, "must be one of"),
        ({"model_tiers": ["gpt-5"]}, 422, "model_tiers"),
        ({"price_overrides": [{**OVERRIDE, "input_per_mtok": 1.5}]}, 422, "input_per_mtok"),
        ({"price_overrides": [{**OVERRIDE, "output_per_mtok": "-1"}]}, 422, "negative"),
        ({"price_overrides": [{**OVERRIDE, "valid_to": "2025-01-01"}]}, 422, "valid_from"),
        ({"price_overrides": {"model": "x"}}, 422, "JSON list"),
        ({"webhooks": [{"url": "ftp://example.com"}]}, 422, "webhooks"),
    ],
)
def test_an_invalid_update_is_refused_whole(client, keys, body, status, fragment):
    _put(client, keys["admin"], FULL)
    before = _get(client, keys["admin"])
    if isinstance(body, dict):  # a valid change beside the invalid one is not kept either
        body = {"max_privacy_mode": "full_trace", **body}
    response = _put(client, keys["admin"], body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert fragment in error["message"]
    assert _get(client, keys["admin"]) == before


def test_settings_need_a_read_key_to_see_and_an_admin_key_to_change(client, keys):
    assert client.get("/v1/settings").status_code == 401
    assert client.get("/v1/settings", headers={"x-p402-api-key": keys["ingest"]}).status_code == 403
    for role in ("read", "ingest"):
        response = _put(client, keys[role], {"max_privacy_mode": "full_trace"})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    assert _get(client, keys["read"])["max_privacy_mode"] == "metadata_only"


def test_each_tenant_has_its_own_settings(client, keys):
    _put(client, keys["admin"], FULL)
    other = _get(client, keys["globex_read"])
    assert other["tenant"] == "globex"
    assert other["max_privacy_mode"] == "metadata_only"
    assert other["price_overrides"] == [] and other["model_tiers"] == {}
    assert other["webhooks"] == []
    assert other["fingerprint_key"]["key_id"] != fingerprint_key_id("ab" * 32)


def test_the_tenants_redaction_patterns_are_applied_at_ingest_in_linear_time(
    client, keys, engine, payload
):
    patterns = [r"PRJ-\d{4}", r"(a+)+$"]  # the second backtracks for hours in Python's re
    update = {"max_privacy_mode": "redacted_trace", "redact_patterns": patterns}
    assert _put(client, keys["admin"], update).status_code == 200
    assert _get(client, keys["read"])["redact_patterns"] == patterns

    prompt = f"Summarise PRJ-1234 for alice@example.com: {'a' * 200_000}!"
    messages = [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
    span = {
        **GENAI_EVENT,
        "p402.privacy.mode": "full_trace",
        "gen_ai.input.messages": json.dumps(messages),
    }
    started = time.perf_counter()
    response = client.post(
        "/v1/traces",
        content=payload(span),
        headers={"x-p402-api-key": keys["ingest"], "content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200 and response.headers["x-p402-events-inserted"] == "1"
    assert time.perf_counter() - started < 10
    with engine.connect() as connection:
        (stored,) = connection.execute(text("SELECT content_input FROM economic_event")).one()
    assert "Summarise [REDACTED:PATTERN] for [REDACTED:EMAIL]: aaa" in stored
    assert "PRJ-1234" not in stored

    assert _put(client, keys["admin"], {"redact_patterns": []}).status_code == 200
    assert _get(client, keys["read"])["redact_patterns"] == []


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([r"(a)\1"], "is not an RE2 regular expression"),
        ([r"(?<=x)y"], "no lookaround"),
        (["ok", ""], "[1]: a regular expression of 1 to 500 characters"),
        (["x"] * 51, "at most 50 patterns"),
        ("PRJ-.*", "a JSON list"),
    ],
)
def test_unusable_redaction_patterns_are_refused_and_nothing_is_written(
    client, keys, patterns, message
):
    answer = _put(
        client, keys["admin"], {"max_privacy_mode": "full_trace", "redact_patterns": patterns}
    )
    assert answer.status_code == 422
    assert "redact_patterns: " in answer.json()["error"]["message"]
    assert message in answer.json()["error"]["message"]
    assert _get(client, keys["read"])["max_privacy_mode"] == "metadata_only"
