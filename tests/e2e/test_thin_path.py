"""The first metered call end to end, with every component real:

openai SDK → stand-in provider → P402 instrumentation → OTLP/HTTP → P402 server → ledger
(SQLite and PostgreSQL) → API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from openai import OpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from tests.conftest import database_text

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor, owner
from p402.instrumentation.pricing import price_version
from p402.instrumentation.testing import manifest
from p402.ledger.keys import Role, create_key

EXPECTED = manifest()["openai_chat.json"]["expect"]
CANARY = "CANARY-4d1c2 please summarise the Initech acquisition memo"


@pytest.fixture
def server(engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(engine)) as running:
        yield running


def _wait_for_events(api: httpx.Client, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events: list[dict[str, object]] = api.get("/v1/events").json()["data"]
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"expected {count} events in the ledger")


def test_an_openai_call_becomes_an_exact_ledger_event(engine, database_url, server, standin):
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        endpoint=server.url, api_key=ingest_key, providers=f"openai={standin.url('/v1')}"
    )
    # The application samples nothing: economic events must still arrive.
    application = TracerProvider(sampler=ALWAYS_OFF).get_tracer("app")
    try:
        client = OpenAI(base_url=standin.url("/v1"), api_key="sk-test")
        with (
            application.start_as_current_span("request"),
            owner(
                department="legal",
                employee="alice",
                project="phoenix",
                session="sess_abc",
                workflow="contract-review",
                task_type="contract_analysis",
            ),
        ):
            reply = client.chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": CANARY}]
            )
        client.close()
        assert reply.choices[0].message.content == "Paris is the capital of France."
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()

    with httpx.Client(base_url=server.url, headers={"x-p402-api-key": read_key}) as api:
        (event,) = _wait_for_events(api, 1)
        spend = api.get("/v1/spend", params={"group_by": "department,model"}).json()

    assert event["provider"] == "openai"
    assert event["operation"] == "chat"
    assert event["model_requested"] == EXPECTED["gen_ai.request.model"]
    assert event["model_used"] == EXPECTED["gen_ai.response.model"]
    assert event["response_id"] == EXPECTED["gen_ai.response.id"]
    assert event["input_tokens"] == EXPECTED["gen_ai.usage.input_tokens"]
    assert event["output_tokens"] == EXPECTED["gen_ai.usage.output_tokens"]
    assert event["cache_read_tokens"] == EXPECTED["gen_ai.usage.cache_read.input_tokens"]
    assert event["cache_write_tokens"] == EXPECTED["gen_ai.usage.cache_write.input_tokens"]
    assert event["reasoning_tokens"] == EXPECTED["gen_ai.usage.reasoning.output_tokens"]
    assert isinstance(event["cost_usd"], str)
    assert Decimal(event["cost_usd"]) == Decimal(EXPECTED["expected_usd"])
    assert event["cost_usd"] == EXPECTED["expected_usd"]
    assert event["cost_evidence"] == "computed"
    assert event["usage_evidence"] == "provider_response"
    assert event["price_version"] == price_version()
    assert event["privacy_mode"] == "metadata_only"
    assert event["policy_result"] == "allowed"
    assert event["status_code"] == 200
    assert event["attempt"] == 0
    assert event["evidence_status"] == "pending"
    assert (event["department"], event["employee"], event["project"]) == (
        "legal",
        "alice",
        "phoenix",
    )
    assert (event["session"], event["workflow"], event["task_type"]) == (
        "sess_abc",
        "contract-review",
        "contract_analysis",
    )
    assert str(event["timestamp"]).endswith("Z")
    assert spend["data"] == [
        {
            "department": "legal",
            "model": EXPECTED["gen_ai.response.model"],
            "cost_usd": EXPECTED["expected_usd"],
            "events": 1,
            "input_tokens": 1342,
            "output_tokens": 214,
            "unpriced_events": 0,
        }
    ]

    # The prompt reached the provider, and nowhere in P402's database.
    assert CANARY in standin.requests[0].body.decode()
    assert CANARY not in database_text(engine, database_url)
    # The owner context reached P402, and never the provider.
    assert "alice" not in str(standin.requests[0].headers) + standin.requests[0].body.decode()
