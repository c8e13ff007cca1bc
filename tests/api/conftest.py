from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from p402.api import create_app
from p402.ledger.keys import Role, create_key


@pytest.fixture
def client(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine)) as test_client:
        yield test_client


@pytest.fixture
def keys(engine) -> dict[str, str]:
    """Keys of every role for tenant acme, and a read key of tenant globex."""
    made = {role.value: create_key(engine, tenant="acme", role=role)[1] for role in Role}
    made["globex_read"] = create_key(engine, tenant="globex", role=Role.READ)[1]
    made["globex_ingest"] = create_key(engine, tenant="globex", role=Role.INGEST)[1]
    return made


GENAI_EVENT = {
    "p402.event.id": "01a205fe-94f1-7db8-93b2-b90a90ed95f3",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.response.model": "gpt-5-mini-2025-08-07",
    "gen_ai.usage.input_tokens": 1342,
    "gen_ai.usage.output_tokens": 214,
    "p402.owner.department": "legal",
    "p402.privacy.mode": "metadata_only",
}
"""The attributes of one P402 economic event, as a span carries them."""


def finished_spans(*attribute_sets: dict[str, object]) -> list[ReadableSpan]:
    """Spans ended by the OpenTelemetry SDK, one per attribute set."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for attributes in attribute_sets:
        tracer.start_span("chat gpt-5-mini", attributes=attributes).end()  # type: ignore[arg-type]
    return list(exporter.get_finished_spans())


def otlp_payload(*attribute_sets: dict[str, object]) -> bytes:
    """A real OTLP protobuf export request with one span per attribute set."""
    return bytes(encode_spans(finished_spans(*attribute_sets)).SerializeToString())


@pytest.fixture
def payload():
    return otlp_payload
