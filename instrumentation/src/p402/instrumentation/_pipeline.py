"""P402's own always-on span pipeline: every economic event is exported, whatever the
application's sampler decides, to ``{P402_ENDPOINT}/v1/traces`` with the P402 API key.

Batches the endpoint cannot take now wait in a bounded on-disk spool and are delivered, in
order, once it can (see :mod:`p402.instrumentation._spool`); ``force_flush`` is true only
when nothing waits there.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from p402.instrumentation._spool import SpoolingSpanExporter
from p402.instrumentation.config import P402Config, default_spool_dir

__all__ = ["API_KEY_HEADER", "build_tracer_provider"]

API_KEY_HEADER = "x-p402-api-key"


class _SpoolingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` whose ``force_flush`` also drains the exporter's spool (the
    SDK's does not call the exporter's ``force_flush``)."""

    def __init__(self, exporter: SpoolingSpanExporter) -> None:
        super().__init__(exporter)
        self._spooling_exporter = exporter

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        exported = super().force_flush(timeout_millis)
        drained = self._spooling_exporter.force_flush(
            30_000 if timeout_millis is None else timeout_millis
        )
        return exported and drained


def build_tracer_provider(config: P402Config) -> TracerProvider:
    headers = {API_KEY_HEADER: config.api_key} if config.api_key else {}
    exporter = SpoolingSpanExporter(
        f"{config.endpoint}/v1/traces",
        config.spool_dir or default_spool_dir(config.endpoint),
        headers=headers,
        max_bytes=config.spool_max_bytes,
    )
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create())
    provider.add_span_processor(_SpoolingBatchSpanProcessor(exporter))
    return provider
