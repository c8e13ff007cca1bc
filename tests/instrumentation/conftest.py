from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from p402.instrumentation import P402Instrumentor
from p402.instrumentation.testing import StandInProvider


class Spans:
    """The economic-event spans the instrumentation produced, in a real SDK exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def all(self) -> list[ReadableSpan]:
        # Events are recorded off the application's path: wait for those handed over so far.
        P402Instrumentor().force_flush()
        return list(self.exporter.get_finished_spans())

    def one(self) -> ReadableSpan:
        spans = self.all()
        assert len(spans) == 1, [span.name for span in spans]
        return spans[0]


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture
def instrument(spans: Spans, standin: StandInProvider) -> Iterator[P402Instrumentor]:
    """The instrumentation on, with the stand-in mapped as OpenAI, exporting into ``spans``."""
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider, providers=f"openai={standin.url('/v1')}"
    )
    yield instrumentor
    instrumentor.uninstrument()


def exported_span_names(body: bytes) -> list[str]:
    """The names of the spans of an OTLP/protobuf export request."""
    request = ExportTraceServiceRequest.FromString(body)
    return [
        span.name
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
