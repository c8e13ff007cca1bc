"""The real openai SDK (on httpx2) and plain httpx clients, metered into economic-event spans."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import httpx2
import pytest
from openai import AsyncOpenAI, OpenAI, RateLimitError

from p402.instrumentation import owner
from p402.instrumentation.pricing import price_version
from p402.instrumentation.testing import manifest

EXPECTED = manifest()["openai_chat.json"]["expect"]
_OPEN_CLIENTS: list[OpenAI] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Every SDK client a test makes is closed after it (no socket is left to the GC)."""
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def _client(standin, **options) -> OpenAI:
    client = OpenAI(base_url=standin.url("/v1"), api_key="test", **options)
    _OPEN_CLIENTS.append(client)
    return client


CANARY = "CANARY-7f3a9 the merger target is Initech"


def _chat(client: OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": CANARY}]
    )


def test_openai_chat_span_carries_the_manifest_attributes(instrument, spans, standin):
    client = _client(standin)
    _chat(client)

    span = spans.one()
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt-5-mini"
    assert span.kind.name == "CLIENT"
    for key, value in EXPECTED.items():
        if key.startswith(("gen_ai.", "http.")):
            expected = tuple(value) if isinstance(value, list) else value
            assert attributes[key] == expected, key
    assert attributes["gen_ai.usage.cost.amount"] == EXPECTED["expected_usd"]
    assert Decimal(attributes["gen_ai.usage.cost.amount"]) == Decimal("0.0005331")
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["gen_ai.usage.cost.source"] == "local"
    assert attributes["p402.cost.evidence"] == "computed"
    assert attributes["p402.usage.evidence"] == "provider_response"
    assert attributes["p402.price.version"] == price_version()
    assert attributes["p402.privacy.mode"] == "metadata_only"
    assert attributes["p402.policy.result"] == "allowed"
    assert attributes["p402.attempt"] == 0
    assert attributes["http.response.status_code"] == 200
    assert len(attributes["p402.event.id"]) == 36


def test_metadata_only_spans_carry_no_content(instrument, spans, standin):
    _chat(_client(standin))

    attributes = dict(spans.one().attributes or {})
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    assert all(CANARY not in str(value) for value in attributes.values())
    assert all("Paris" not in str(value) for value in attributes.values())


def test_owner_context_is_on_the_span_and_never_sent_to_the_provider(instrument, spans, standin):
    client = _client(standin)
    with owner(department="legal", employee="alice", session="sess_abc", project="phoenix"):
        client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"baggage": "p402.department=legal"},
        )

    attributes = dict(spans.one().attributes or {})
    assert attributes["p402.owner.department"] == "legal"
    assert attributes["p402.owner.employee"] == "alice"
    assert attributes["p402.owner.project"] == "phoenix"
    assert attributes["p402.owner.session"] == "sess_abc"
    assert attributes["gen_ai.conversation.id"] == "sess_abc"
    (sent,) = standin.requests
    assert "baggage" not in sent.headers
    wire = (str(sent.headers) + sent.body.decode()).lower()
    for value in ("legal", "alice", "phoenix", "sess_abc"):
        assert value not in wire


def test_async_openai_client_is_metered(instrument, spans, standin):
    async def call() -> None:
        client = AsyncOpenAI(base_url=standin.url("/v1"), api_key="test")
        with owner(department="engineering"):
            await client.chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
            )
        await client.close()

    asyncio.run(call())
    attributes = dict(spans.one().attributes or {})
    assert attributes["gen_ai.usage.cost.amount"] == EXPECTED["expected_usd"]
    assert attributes["p402.owner.department"] == "engineering"


@pytest.mark.parametrize("client_module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_plain_http_clients_are_metered(instrument, spans, standin, client_module):
    with client_module.Client() as client:
        response = client.post(
            standin.url("/v1/chat/completions"),
            json={"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.json()["usage"]["prompt_tokens"] == EXPECTED["gen_ai.usage.input_tokens"]
    attributes = dict(spans.one().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == 1342
    assert attributes["gen_ai.usage.cost.amount"] == EXPECTED["expected_usd"]


def test_streamed_json_body_is_metered_when_the_application_reads_it(instrument, spans, standin):
    with httpx2.Client() as client:
        request = client.build_request(
            "POST",
            standin.url("/v1/chat/completions"),
            json={"model": "gpt-5-mini", "messages": []},
        )
        response = client.send(request, stream=True)
        assert spans.all() == []
        body = response.read()
    assert b"chatcmpl-" in body
    assert dict(spans.one().attributes or {})["gen_ai.usage.output_tokens"] == 214


def test_requests_that_are_not_llm_calls_are_not_metered(instrument, spans, standin):
    with httpx2.Client() as client:
        client.post(standin.url("/v1/files"), json={})
        client.post(standin.url("/elsewhere/chat/completions"), json={})
    assert spans.all() == []


def test_a_rate_limited_call_records_the_error_and_no_invented_cost(instrument, spans, standin):
    standin.fail_next(429)
    client = _client(standin, max_retries=0)
    with pytest.raises(RateLimitError):
        _chat(client)

    attributes = dict(spans.one().attributes or {})
    assert attributes["error.type"] == "429"
    assert attributes["http.response.status_code"] == 429
    assert attributes["p402.usage.evidence"] == "missing"
    assert attributes["p402.cost.evidence"] == "unpriced"
    assert "gen_ai.usage.cost.amount" not in attributes
    assert "gen_ai.usage.input_tokens" not in attributes


def test_a_retried_call_is_one_attempt_per_span_and_billed_once(instrument, spans, standin):
    standin.fail_next(429)
    client = _client(standin, max_retries=1)
    _chat(client)

    first, second = sorted(spans.all(), key=lambda span: span.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["p402.attempt"] == 0
    assert second.attributes["p402.attempt"] == 1
    costs = [s.attributes.get("gen_ai.usage.cost.amount") for s in (first, second)]
    assert costs == [None, EXPECTED["expected_usd"]]


def test_a_model_unknown_to_the_price_data_is_unpriced_not_free(spans, standin):
    from p402.instrumentation import P402Instrumentor

    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider, providers=f"vllm:openai={standin.url('/v1')}"
    )
    try:
        _chat(_client(standin))
    finally:
        instrumentor.uninstrument()
    attributes = dict(spans.one().attributes or {})
    assert attributes["gen_ai.provider.name"] == "vllm"
    assert attributes["gen_ai.usage.input_tokens"] == 1342
    assert attributes["p402.cost.evidence"] == "unpriced"
    assert "gen_ai.usage.cost.amount" not in attributes
