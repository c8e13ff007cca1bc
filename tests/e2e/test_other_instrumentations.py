"""The anthropic SDK's own tracing and P402 report the same call: the ledger has one event."""

from __future__ import annotations

import time

import anthropic
import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor, owner
from p402.ledger.keys import Role, create_key


def test_the_anthropic_sdks_spans_and_p402s_are_one_event(engine, standin, tmp_path):
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    with BackgroundServer(create_app(engine)) as server:
        # The application exports its own traces, the SDK's GenAI spans among them, to P402.
        application = TracerProvider()
        application.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(
                    endpoint=f"{server.url}/v1/traces", headers={"x-p402-api-key": ingest_key}
                )
            )
        )
        instrumentor = P402Instrumentor()
        instrumentor.instrument(
            endpoint=server.url,
            api_key=ingest_key,
            providers=f"anthropic={standin.url('/anthropic')}",
            spool_dir=tmp_path / "spool",
        )
        try:
            client = anthropic.Anthropic(
                base_url=standin.url("/anthropic"),
                api_key="sk-ant-test",
                open_telemetry={"tracer_provider": application},
            )
            with owner(department="legal"):
                client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[])
            client.close()
            application.force_flush()
            assert instrumentor.force_flush()
        finally:
            instrumentor.uninstrument()
            application.shutdown()
        with httpx.Client(base_url=server.url, headers={"x-p402-api-key": read_key}) as api:
            time.sleep(0.2)
            events = api.get("/v1/events").json()["data"]
    (event,) = events
    assert event["department"] == "legal"  # P402's report, with its owners, is the one kept
    assert event["response_id"] == "msg_01TD1GKJuDa6ZrY4zkYPcA4s"
    assert event["cost_usd"] == "0.0178536"
