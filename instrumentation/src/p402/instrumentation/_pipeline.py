"""Where finished economic events go.

``OtlpSink`` is P402's own always-on pipeline: whatever the application's sampler decides,
every event is encoded straight to OTLP (:mod:`p402.instrumentation._otlp`), batched, and
exported to ``{P402_ENDPOINT}/v1/traces`` with the P402 API key. Batches the endpoint cannot
take now wait in a bounded on-disk spool and are delivered, in order, once it can (see
:mod:`p402.instrumentation._spool`). Each event is a child span of the application's
current span, so it joins the application's trace.

``TracerSink`` hands events to an OpenTelemetry tracer instead, as SDK spans: it is used when
``instrument(tracer_provider=...)`` names one.

Both are called on the recorder thread only.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from p402.instrumentation._otlp import RequestFrame, encode_span
from p402.instrumentation._spool import SpoolingSpanExporter
from p402.instrumentation.config import P402Config, default_spool_dir
from p402.instrumentation.version import __version__
from p402.instrumentation.vocabulary import API_KEY_HEADER

__all__ = ["EventSink", "OtlpSink", "TracerSink", "build_otlp_sink"]

SCOPE = ("p402.instrumentation", __version__)


class EventSink(Protocol):
    def emit(
        self,
        name: str,
        parent: Context,
        start_ns: int,
        end_ns: int,
        common: dict[str, Any],
        specific: dict[str, Any],
        error: bool,
    ) -> None:
        """One event, a span whose attributes are ``common`` then ``specific``: ``common``
        holds what describes the call (provider, server, models, owners, policy), which
        many events share, ``specific`` this event's own (ids, status, usage, cost)."""

    def tick(self) -> None:
        """Called at least every second: ship what has waited long enough."""

    def flush(self, timeout_millis: int) -> bool:
        """Ship everything now; ``True`` when all of it was delivered."""

    def shutdown(self) -> None: ...


class TracerSink:
    """Events as SDK spans of ``tracer``, whatever the provider's sampler decides: an
    economic event is a bill, not a sample, so the tracer samples every one (an SDK tracer's
    ``sampler`` is replaced by ``ALWAYS_ON``, for this tracer only)."""

    def __init__(self, tracer: Tracer, provider: Any) -> None:
        if hasattr(tracer, "sampler"):
            tracer.sampler = ALWAYS_ON
        self._tracer = tracer
        self._provider = provider

    def emit(
        self,
        name: str,
        parent: Context,
        start_ns: int,
        end_ns: int,
        common: dict[str, Any],
        specific: dict[str, Any],
        error: bool,
    ) -> None:
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={**common, **specific},
            start_time=start_ns,
        )
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    def tick(self) -> None:
        pass

    def flush(self, timeout_millis: int) -> bool:
        force_flush = getattr(self._provider, "force_flush", None)
        return bool(force_flush(timeout_millis)) if force_flush else True

    def shutdown(self) -> None:
        pass


class OtlpSink:
    """Events encoded to OTLP and exported in batches of up to ``max_batch``, at the latest
    ``max_delay`` seconds after the first of a batch."""

    def __init__(
        self,
        exporter: SpoolingSpanExporter,
        resource: Resource,
        *,
        max_batch: int = 512,
        max_delay: float = 1.0,
    ) -> None:
        self.exporter = exporter
        self._frame = RequestFrame(resource.attributes, SCOPE)
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._batch: list[bytes] = []
        self._first_at = 0.0
        self._lock = threading.Lock()
        self._random = random.Random()
        self._last_parent: tuple[Context | None, tuple[bytes, bytes] | None] = (None, None)

    def emit(
        self,
        name: str,
        parent: Context,
        start_ns: int,
        end_ns: int,
        common: dict[str, Any],
        specific: dict[str, Any],
        error: bool,
    ) -> None:
        last_parent, ids = self._last_parent
        if parent is not last_parent:  # contexts are immutable: often the same one again
            ids = _span_ids(parent)
            self._last_parent = parent, ids
        getrandbits = self._random.getrandbits
        if ids is None:
            trace_id, parent_span_id = (getrandbits(128) or 1).to_bytes(16, "big"), None
        else:
            trace_id, parent_span_id = ids
        span = encode_span(  # by position: once per event
            trace_id,
            (getrandbits(64) or 1).to_bytes(8, "big"),
            parent_span_id,
            name,
            start_ns,
            end_ns,
            common,
            specific,
            error,
        )
        with self._lock:
            if not self._batch:
                self._first_at = time.monotonic()
            self._batch.append(span)
            full = len(self._batch) >= self._max_batch
        if full:
            self._ship()

    def tick(self) -> None:
        if self._batch and time.monotonic() - self._first_at >= self._max_delay:
            self._ship()

    def _ship(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
        if batch:
            body = self._frame.encode(batch)
            self.exporter.export_encoded(body, len(batch))

    def flush(self, timeout_millis: int) -> bool:
        self._ship()
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._ship()
        self.exporter.shutdown()


def _span_ids(parent: Context) -> tuple[bytes, bytes] | None:
    """The trace id and span id of the span current in ``parent``, if there is one."""
    span_context = trace.get_current_span(parent).get_span_context()
    if not span_context.is_valid:
        return None
    return span_context.trace_id.to_bytes(16, "big"), span_context.span_id.to_bytes(8, "big")


def build_otlp_sink(config: P402Config) -> OtlpSink:
    headers = {API_KEY_HEADER: config.api_key} if config.api_key else {}
    exporter = SpoolingSpanExporter(
        f"{config.endpoint}/v1/traces",
        config.spool_dir or default_spool_dir(config.endpoint),
        headers=headers,
        max_bytes=config.spool_max_bytes,
    )
    return OtlpSink(exporter, Resource.create())
