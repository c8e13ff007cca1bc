"""Enabling and disabling the instrumentation."""

from __future__ import annotations

from importlib.metadata import entry_points

import httpx
import httpx2

from p402.instrumentation import P402Instrumentor

ORIGINAL_SENDS = {
    cls: cls.__dict__["send"]
    for cls in (httpx.Client, httpx.AsyncClient, httpx2.Client, httpx2.AsyncClient)
}


def test_uninstrument_restores_every_send_exactly(spans):
    instrumentor = P402Instrumentor()
    instrumentor.instrument(tracer_provider=spans.provider)
    assert all(cls.__dict__["send"] is not send for cls, send in ORIGINAL_SENDS.items())
    instrumentor.uninstrument()
    assert all(cls.__dict__["send"] is send for cls, send in ORIGINAL_SENDS.items())


def test_instrumenting_twice_patches_once(instrument, spans, standin):
    P402Instrumentor().instrument(tracer_provider=spans.provider)
    with httpx2.Client() as client:
        client.post(standin.url("/v1/chat/completions"), json={"model": "gpt-5-mini"})
    assert len(spans.all()) == 1
    assert not hasattr(httpx2.Client.send.__wrapped__, "__wrapped__")


def test_the_opentelemetry_instrument_entry_point_names_p402(monkeypatch, tmp_path):
    (entry_point,) = [
        ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "p402"
    ]
    monkeypatch.setenv("P402_SPOOL_DIR", str(tmp_path))
    entry_point.load()().instrument()  # as OpenTelemetry's loader does
    try:
        assert P402Instrumentor().is_instrumented_by_opentelemetry
    finally:
        P402Instrumentor().uninstrument()


def test_spans_join_the_applications_current_trace(instrument, spans, standin):
    from opentelemetry.sdk.trace import TracerProvider

    application = TracerProvider().get_tracer("app")
    with application.start_as_current_span("handle request") as parent, httpx2.Client() as c:
        c.post(standin.url("/v1/chat/completions"), json={"model": "gpt-5-mini"})
    span = spans.one()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.parent.span_id == parent.get_span_context().span_id


def test_an_applications_sampler_does_not_drop_economic_events(standin):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)  # the application samples nothing
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = P402Instrumentor()
    instrumentor.instrument(tracer_provider=provider, providers=f"openai={standin.url('/v1')}")
    try:
        application = provider.get_tracer("app")
        with application.start_as_current_span("handle request"), httpx2.Client() as client:
            client.post(standin.url("/v1/chat/completions"), json={"model": "gpt-5-mini"})
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()
    (event,) = exporter.get_finished_spans()  # the application's own span was not sampled
    assert event.attributes is not None and "p402.event.id" in event.attributes
    assert provider.get_tracer("app").sampler is ALWAYS_OFF  # the application's, unchanged
