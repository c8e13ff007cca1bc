"""Other instrumentations' GenAI spans, exported over OTLP by an application's own pipeline,
become ledger events costed by the receiver: OpenTelemetry's OpenAI instrumentation
(``opentelemetry-instrumentation-openai-v2``) and OpenLLMetry's Anthropic one
(``opentelemetry-instrumentation-anthropic``), the real packages against the stand-in
provider. A call that P402 or another instrumentation also reports stays one event, and the
prompt text these instrumentations send never reaches a ``metadata_only`` ledger."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.conftest import database_text

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor, owner
from p402.ledger.keys import Role, create_key

CANARY = "CANARY-5b07e the divestiture of the Lisbon unit"
CHAT_ID = "chatcmpl-CZt9bQ1xWm7Lr2KpVd4nA8sEfGh3J"
MESSAGE_ID = "msg_01TD1GKJuDa6ZrY4zkYPcA4s"


@pytest.fixture
def ledger(engine) -> Iterator[dict[str, Any]]:
    """A running P402 server and an ingest and a read key of one tenant."""
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    with BackgroundServer(create_app(engine)) as server:
        yield {"url": server.url, "ingest_key": ingest_key, "read_key": read_key}


@contextmanager
def _application_pipeline(
    ledger: dict[str, Any],
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The application's own tracer provider, exporting everything to P402 over OTLP/HTTP,
    and a copy of what it exported."""
    provider, exported = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                endpoint=f"{ledger['url']}/v1/traces",
                headers={"x-p402-api-key": ledger["ingest_key"]},
            )
        )
    )
    try:
        yield provider, exported
    finally:
        provider.shutdown()


def _reported_ids(exported: InMemorySpanExporter) -> list[str]:
    """The response ids of the spans the application exported."""
    return [
        str((span.attributes or {}).get("gen_ai.response.id"))
        for span in exported.get_finished_spans()
    ]


@contextmanager
def _instrumented(instrumentor: Any, provider: TracerProvider) -> Iterator[None]:
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _events(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    """The tenant's events. Every span is in by now: the application's span processor
    exports each span as it ends and P402's flush returns once its export is answered, and the
    receiver answers an export once its events are stored."""
    headers = {"x-p402-api-key": ledger["read_key"]}
    with httpx.Client(base_url=ledger["url"], headers=headers) as api:
        events: list[dict[str, Any]] = api.get("/v1/events").json()["data"]
    return events


def _chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": CANARY}]
    )


def test_opentelemetrys_openai_spans_become_events_costed_by_the_receiver(ledger, standin):
    with (
        _application_pipeline(ledger) as (provider, _),
        _instrumented(OpenAIInstrumentor(), provider),
        openai.OpenAI(base_url=standin.url("/v1"), api_key="sk-test") as client,
    ):
        _chat(client)
        stream = client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    events = {event["operation"] + ":" + event["model_used"]: event for event in _events(ledger)}
    assert set(events) == {
        "chat:gpt-5-mini-2025-08-07",
        "chat:gpt-4.1-mini-2025-04-14",
        "embeddings:text-embedding-3-small",
    }
    chat = events["chat:gpt-5-mini-2025-08-07"]
    assert (chat["provider"], chat["response_id"]) == ("openai", CHAT_ID)
    assert (chat["input_tokens"], chat["output_tokens"]) == (1342, 214)
    # This instrumentation reports no cached tokens: all 1,342 input tokens are priced as
    # uncached ($0.25/M) with 214 output ($2/M). P402's own event prices the 1,024 cached
    # ones at the cache rate: 0.0005331, as the fixture manifest says.
    assert chat["cost_usd"] == "0.0007635"
    assert chat["cost_evidence"] == "computed"
    assert chat["client_cost_usd"] is None
    assert events["chat:gpt-4.1-mini-2025-04-14"]["cost_usd"] == "0.0000244"  # the manifest's
    assert events["embeddings:text-embedding-3-small"]["cost_usd"] == "0.00000016"


def test_openllmetrys_anthropic_spans_become_events_costed_by_the_receiver(
    ledger, standin, engine, database_url
):
    with (
        _application_pipeline(ledger) as (provider, _),
        _instrumented(AnthropicInstrumentor(), provider),
    ):
        client = anthropic.Anthropic(
            base_url=standin.url("/anthropic"), api_key="sk-ant-test", open_telemetry=False
        )
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=1024,
            messages=[{"role": "user", "content": CANARY}],
        )
        client.close()
    (event,) = _events(ledger)
    assert (event["provider"], event["response_id"]) == ("anthropic", MESSAGE_ID)
    # total input with the cache (8,192 read, 2,048 written) as a subset, as the SPEC counts
    assert (event["input_tokens"], event["output_tokens"]) == (10252, 512)
    assert (event["cache_read_tokens"], event["cache_write_tokens"]) == (8192, 2048)
    assert event["cost_usd"] == "0.0178536"  # the fixture manifest's figure
    # OpenLLMetry sent the prompt (gen_ai.input.messages): the tenant keeps no content.
    assert CANARY in standin.requests[0].body.decode()
    assert CANARY not in database_text(engine, database_url)


def test_the_anthropic_sdk_and_openllmetry_reporting_one_call_are_one_event(ledger, standin):
    with (
        _application_pipeline(ledger) as (provider, exported),
        _instrumented(AnthropicInstrumentor(), provider),
    ):
        client = anthropic.Anthropic(
            base_url=standin.url("/anthropic"),
            api_key="sk-ant-test",
            open_telemetry={"tracer_provider": provider},
        )
        client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=[])
        client.close()
        assert _reported_ids(exported) == [MESSAGE_ID, MESSAGE_ID]  # the SDK's, OpenLLMetry's
    (event,) = _events(ledger)
    assert (event["response_id"], event["cost_usd"]) == (MESSAGE_ID, "0.0178536")


def test_p402_and_opentelemetrys_openai_instrumentation_are_one_event(ledger, standin, tmp_path):
    p402 = P402Instrumentor()
    p402.instrument(
        endpoint=ledger["url"],
        api_key=ledger["ingest_key"],
        providers=f"openai={standin.url('/v1')}",
        spool_dir=tmp_path / "spool",
    )
    try:
        with (
            _application_pipeline(ledger) as (provider, exported),
            _instrumented(OpenAIInstrumentor(), provider),
            openai.OpenAI(base_url=standin.url("/v1"), api_key="sk-test") as client,
            owner(department="legal"),
        ):
            _chat(client)
            assert _reported_ids(exported) == [CHAT_ID]
        assert p402.force_flush()
    finally:
        p402.uninstrument()
    (event,) = _events(ledger)
    # P402's report is the one kept: its owners, and its price with the cached tokens
    assert (event["department"], event["response_id"]) == ("legal", CHAT_ID)
    assert event["cost_usd"] == "0.0005331"
