"""Every provider fixture through its real SDK: sync, async, streamed, closed early, retried.

Each case asserts the manifest's attributes and its exact cost. The stand-in serves all
providers; each is mapped under its own base with ``P402_PROVIDERS``, as gateways are.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from p402.instrumentation import P402Instrumentor
from p402.instrumentation.testing import StandInProvider, manifest

MANIFEST = manifest()
_OPEN_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Every SDK client a test makes is closed after it (no socket is left to the GC)."""
    yield
    while _OPEN_CLIENTS:
        client = _OPEN_CLIENTS.pop()
        closing = client.close()
        if asyncio.iscoroutine(closing):
            asyncio.run(closing)


def _track(client: Any) -> Any:
    _OPEN_CLIENTS.append(client)
    return client


SKIPPED_KEYS = {"openai.response.service_tier", "openai.api.type"}


@pytest.fixture
def metered(spans, standin: StandInProvider) -> Iterator[StandInProvider]:
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider,
        providers=",".join(
            [
                f"openai={standin.url('/v1')}",
                f"openrouter={standin.url('/api/v1')}",
                f"anthropic={standin.url('/anthropic')}",
                f"anthropic={standin.url('/bedrock')}",  # Bedrock's API, as a gateway serves it
                f"gcp.gemini={standin.url('/gemini')}",
            ]
        ),
    )
    yield standin
    instrumentor.uninstrument()


def _openai(standin: StandInProvider, **options: Any) -> openai.OpenAI:
    return _track(openai.OpenAI(base_url=standin.url("/v1"), api_key="sk-test", **options))


def _anthropic(standin: StandInProvider, **options: Any) -> anthropic.Anthropic:
    return _track(
        anthropic.Anthropic(base_url=standin.url("/anthropic"), api_key="sk-ant-test", **options)
    )


def _bedrock(standin: StandInProvider) -> anthropic.AnthropicBedrock:
    return _track(
        anthropic.AnthropicBedrock(
            aws_access_key="AKIAEXAMPLEEXAMPLE00",
            aws_secret_key="example" * 6,
            aws_region="us-east-1",
            base_url=standin.url("/bedrock"),
        )
    )


BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def _gemini(standin: StandInProvider, **http: Any) -> genai.Client:
    options = genai_types.HttpOptions(base_url=standin.url("/gemini/"), **http)
    return _track(genai.Client(api_key="gemini-test", http_options=options))


def assert_matches_manifest(
    span: Any, fixture: str, *, evidence: str, requested: str | None = None
) -> dict[str, Any]:
    """``requested``: the model the call asked for, when not the fixture's (as on Bedrock)."""
    expect = dict(MANIFEST[fixture]["expect"])
    if requested is not None:
        expect["gen_ai.request.model"] = requested
    attributes = dict(span.attributes or {})
    for key, value in expect.items():
        if key.startswith(("gen_ai.", "error.")) and key not in SKIPPED_KEYS:
            if key == "gen_ai.provider.name":
                value = value.split(" ")[0]
            expected = tuple(value) if isinstance(value, list) else value
            assert attributes.get(key) == expected, (fixture, key)
    assert "E" not in attributes["gen_ai.usage.cost.amount"]  # a plain decimal string
    assert Decimal(attributes["gen_ai.usage.cost.amount"]) == Decimal(expect["expected_usd"])
    assert attributes["p402.usage.evidence"] == evidence
    return attributes


# --- OpenAI --------------------------------------------------------------------------------


def test_openai_chat(metered, spans):
    _openai(metered).chat.completions.create(model="gpt-5-mini", messages=[])
    assert_matches_manifest(spans.one(), "openai_chat.json", evidence="provider_response")


def test_openai_chat_stream_with_usage(metered, spans):
    stream = _openai(metered).chat.completions.create(
        model="gpt-4.1-mini", messages=[], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None  # the application asked for it, so it sees it
    attributes = assert_matches_manifest(
        spans.one(), "openai_chat_stream.sse", evidence="stream_final"
    )
    assert attributes["gen_ai.request.stream"] is True


def test_openai_chat_stream_gets_usage_injected_and_the_app_sees_no_difference(metered, spans):
    stream = _openai(metered).chat.completions.create(
        model="gpt-4.1-mini", messages=[], stream=True
    )
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "Paris is the capital of France."
    )
    sent = json.loads(metered.requests[0].body)
    assert sent["stream_options"] == {"include_usage": True}
    assert_matches_manifest(spans.one(), "openai_chat_stream.sse", evidence="stream_final")


def test_openai_chat_stream_without_injection_has_missing_usage_not_zero(spans, standin):
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider,
        providers=f"openai={standin.url('/v1')}",
        include_stream_usage=False,
    )
    try:
        list(
            _openai(standin).chat.completions.create(model="gpt-4.1-mini", messages=[], stream=True)
        )
    finally:
        instrumentor.uninstrument()
    attributes = dict(spans.one().attributes or {})
    assert "stream_options" not in json.loads(standin.requests[0].body)
    assert attributes["p402.usage.evidence"] == "missing"
    assert attributes["p402.cost.evidence"] == "unpriced"
    assert "gen_ai.usage.cost.amount" not in attributes
    assert "gen_ai.usage.input_tokens" not in attributes


def test_openai_chat_stream_closed_early_is_incomplete_and_unpriced(metered, spans):
    metered.stream_pause = 0.05
    stream = _openai(metered).chat.completions.create(
        model="gpt-4.1-mini", messages=[], stream=True
    )
    next(iter(stream))
    stream.close()
    attributes = dict(spans.one().attributes or {})
    assert attributes["p402.usage.evidence"] == "stream_incomplete"
    assert attributes["p402.cost.evidence"] == "unpriced"
    assert "gen_ai.usage.cost.amount" not in attributes
    assert (
        attributes["gen_ai.response.id"]
        == MANIFEST["openai_chat_stream.sse"]["expect"]["gen_ai.response.id"]
    )


def test_openai_async_chat_stream(metered, spans):
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=metered.url("/v1"), api_key="sk-test")
        stream = await client.chat.completions.create(
            model="gpt-4.1-mini", messages=[], stream=True
        )
        async for _ in stream:
            pass
        await client.close()

    asyncio.run(run())
    assert_matches_manifest(spans.one(), "openai_chat_stream.sse", evidence="stream_final")


def test_openai_responses(metered, spans):
    _openai(metered).responses.create(model="gpt-5-mini", input="hi")
    assert_matches_manifest(spans.one(), "openai_responses.json", evidence="provider_response")


def test_openai_responses_stream(metered, spans):
    with _openai(metered).responses.create(model="gpt-4.1-mini", input="hi", stream=True) as s:
        events = [event.type for event in s]
    assert events[-1] == "response.completed"
    assert_matches_manifest(spans.one(), "openai_responses_stream.sse", evidence="stream_final")


def test_openai_embeddings(metered, spans):
    _openai(metered).embeddings.create(model="text-embedding-3-small", input="hello")
    attributes = assert_matches_manifest(
        spans.one(), "openai_embeddings.json", evidence="provider_response"
    )
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert "gen_ai.usage.output_tokens" not in attributes


def test_openrouter_reported_cost_wins(metered, spans):
    client = _track(openai.OpenAI(base_url=metered.url("/api/v1"), api_key="sk-or-test"))
    client.chat.completions.create(model="anthropic/claude-sonnet-4.5", messages=[])
    attributes = assert_matches_manifest(
        spans.one(), "openrouter_chat.json", evidence="provider_response"
    )
    assert attributes["gen_ai.provider.name"] == "openrouter"
    assert attributes["gen_ai.usage.cost.source"] == "provider"
    assert attributes["p402.cost.evidence"] == "provider_reported"


# --- Anthropic -----------------------------------------------------------------------------


def test_anthropic_messages(metered, spans):
    _anthropic(metered).messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    )
    attributes = assert_matches_manifest(
        spans.one(), "anthropic_messages.json", evidence="provider_response"
    )
    assert attributes["gen_ai.request.max_tokens"] == 1024


def test_anthropic_messages_async(metered, spans):
    async def run() -> None:
        client = anthropic.AsyncAnthropic(base_url=metered.url("/anthropic"), api_key="k")
        await client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=[])
        await client.close()

    asyncio.run(run())
    assert_matches_manifest(spans.one(), "anthropic_messages.json", evidence="provider_response")


def test_anthropic_stream_usage_is_overwritten_never_summed(metered, spans):
    with _anthropic(metered).messages.stream(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "The capital of France is Paris."
    attributes = assert_matches_manifest(
        spans.one(), "anthropic_messages_stream.sse", evidence="stream_final"
    )
    assert attributes["gen_ai.usage.output_tokens"] == 15  # not 1 + 15


def test_anthropic_stream_closed_early_is_incomplete(metered, spans):
    metered.stream_pause = 0.05
    stream = _anthropic(metered).messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[], stream=True
    )
    next(iter(stream))
    stream.close()
    attributes = dict(spans.one().attributes or {})
    assert attributes["p402.usage.evidence"] == "stream_incomplete"
    assert "gen_ai.usage.cost.amount" not in attributes


def test_anthropic_on_bedrock_reads_its_binary_event_stream(metered, spans):
    client = _bedrock(metered)
    client.messages.create(model=BEDROCK_MODEL, max_tokens=1024, messages=[])
    assert_matches_manifest(
        spans.one(),
        "anthropic_messages.json",
        evidence="provider_response",
        requested=BEDROCK_MODEL,
    )
    spans.exporter.clear()
    with client.messages.stream(model=BEDROCK_MODEL, max_tokens=1024, messages=[]) as stream:
        text = "".join(stream.text_stream)
    assert text == "The capital of France is Paris."  # the SDK's own decoder (botocore's)
    assert metered.requests[-1].path.endswith("/invoke-with-response-stream")
    attributes = assert_matches_manifest(
        spans.one(),
        "anthropic_messages_stream.sse",
        evidence="stream_final",
        requested=BEDROCK_MODEL,
    )
    assert attributes["gen_ai.usage.output_tokens"] == 15  # overwritten, not summed


def test_anthropic_on_bedrock_stream_closed_early_is_incomplete(metered, spans):
    metered.stream_pause = 0.05
    stream = _bedrock(metered).messages.create(
        model=BEDROCK_MODEL, max_tokens=1024, messages=[], stream=True
    )
    next(iter(stream))
    stream.close()
    attributes = dict(spans.one().attributes or {})
    assert attributes["p402.usage.evidence"] == "stream_incomplete"
    assert "gen_ai.usage.cost.amount" not in attributes


def test_anthropic_rate_limit_then_success_bills_once(metered, spans):
    metered.fail_next(429)
    _anthropic(metered, max_retries=2).messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[]
    )
    failed, succeeded = sorted(spans.all(), key=lambda span: span.start_time or 0)
    assert dict(failed.attributes or {})["error.type"] == "429"
    assert "gen_ai.usage.cost.amount" not in dict(failed.attributes or {})
    assert dict(succeeded.attributes or {})["p402.attempt"] == 1
    assert_matches_manifest(succeeded, "anthropic_messages.json", evidence="provider_response")


# --- Gemini --------------------------------------------------------------------------------


def test_gemini_generate_content(metered, spans):
    client = _gemini(metered)  # a genai.Client closes its HTTP client when collected
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    attributes = assert_matches_manifest(
        spans.one(), "gemini_generate.json", evidence="provider_response"
    )
    assert attributes["gen_ai.request.model"] == "gemini-2.5-flash"
    assert attributes["gen_ai.provider.name"] == "gcp.gemini"


def test_gemini_sse_stream(metered, spans):
    client = _gemini(metered)
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert len(chunks) == 3
    assert "alt=sse" in metered.requests[0].path
    assert_matches_manifest(spans.one(), "gemini_stream.sse", evidence="stream_final")


def test_gemini_json_array_stream(metered, spans):
    with (
        httpx2.Client() as client,
        client.stream(
            "POST",
            metered.url("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        ) as response,
    ):
        body = b"".join(response.iter_bytes(chunk_size=50))
    assert len(json.loads(body)) == 3
    assert_matches_manifest(spans.one(), "gemini_stream.sse", evidence="stream_final")


def test_gemini_async_through_httpx2(metered, spans):
    async def run() -> None:
        client = _gemini(metered, async_client_args={"transport": httpx2.AsyncHTTPTransport()})
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
        await client.aio.aclose()

    asyncio.run(run())
    assert_matches_manifest(spans.one(), "gemini_generate.json", evidence="provider_response")


def test_vertex_url_shapes_name_the_model():
    from p402.instrumentation.formats.anthropic import AnthropicFormat
    from p402.instrumentation.formats.gemini import GeminiFormat

    gemini_path = (
        "/v1/projects/p/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:streamGenerateContent"
    )
    endpoint = GeminiFormat().endpoint(gemini_path)
    assert endpoint is not None
    assert GeminiFormat().request_facts(endpoint, gemini_path, {}).model == "gemini-2.5-flash"
    claude_path = (
        "/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
        "claude-sonnet-4-5@20250929:streamRawPredict"
    )
    endpoint = AnthropicFormat().endpoint(claude_path)
    assert endpoint is not None
    facts = AnthropicFormat().request_facts(endpoint, claude_path, {"max_tokens": 5})
    assert (facts.model, facts.stream) == ("claude-sonnet-4-5@20250929", True)
    bedrock_path = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    endpoint = AnthropicFormat().endpoint(bedrock_path)
    assert endpoint is not None
    facts = AnthropicFormat().request_facts(endpoint, bedrock_path, {})
    assert facts.model == "anthropic.claude-sonnet-4-5-20250929-v1:0"
