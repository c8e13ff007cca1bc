"""P402's own always-on span pipeline: every economic event is exported, whatever the
application's sampler decides, to ``{P402_ENDPOINT}/v1/traces`` with the P402 API key.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from p402.instrumentation.config import P402Config

__all__ = ["API_KEY_HEADER", "build_tracer_provider"]

API_KEY_HEADER = "x-p402-api-key"


def build_tracer_provider(config: P402Config) -> TracerProvider:
    headers = {API_KEY_HEADER: config.api_key} if config.api_key else {}
    exporter = OTLPSpanExporter(endpoint=f"{config.endpoint}/v1/traces", headers=headers)
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
