"""``P402Instrumentor``: meter every LLM call made through ``httpx`` or ``httpx2``.

    from p402.instrumentation import P402Instrumentor

    P402Instrumentor().instrument()  # settings from P402_* variables
    P402Instrumentor().instrument(endpoint="http://p402:4318", api_key="...")

Every keyword is optional (see :mod:`p402.instrumentation.config`); ``tracer_provider``
replaces P402's own always-on export pipeline (its processors export the events; its sampler
does not decide them: every event is recorded). ``uninstrument()`` restores the clients'
``send`` methods exactly. The ``p402`` entry point of ``opentelemetry_instrumentor`` lets
``opentelemetry-instrument python app.py`` enable it with no code change (see
:mod:`p402.instrumentation.auto`).
"""

from __future__ import annotations

import atexit
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import get_tracer

from p402.instrumentation._metering import Meter
from p402.instrumentation._patches import patch_clients, unpatch_clients
from p402.instrumentation._pipeline import SCOPE, EventSink, TracerSink, build_otlp_sink
from p402.instrumentation._recorder import Recorder
from p402.instrumentation._threads import patch_threads, unpatch_threads
from p402.instrumentation.config import Enforcement, P402Config
from p402.instrumentation.enforcement import Enforcer
from p402.instrumentation.package import _instruments
from p402.instrumentation.privacy import content_policy

__all__ = ["P402Instrumentor"]


class P402Instrumentor(BaseInstrumentor):  # type: ignore[misc]
    """See the module docstring."""

    _patched: list[type]
    _meter: Meter | None = None
    _enforcer: Enforcer | None = None
    _recorder: Recorder
    _sink: EventSink

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.pop("tracer_provider", None)
        config = P402Config.load(**kwargs)
        if tracer_provider is None:
            self._sink = build_otlp_sink(config)
        else:
            tracer = get_tracer(SCOPE[0], SCOPE[1], tracer_provider=tracer_provider)
            self._sink = TracerSink(tracer, tracer_provider)
        content = content_policy(
            config.privacy_mode,
            api_key=config.api_key,
            fingerprint_key=config.fingerprint_key,
            signing_key=config.signing_key,
            redact_patterns=config.redact_patterns,
        )
        self._recorder = Recorder(self._sink.tick)
        self._enforcer = None if config.enforcement is Enforcement.OFF else Enforcer(config)
        self._meter = Meter(config, self._sink, content, self._recorder, self._enforcer)
        if self._enforcer is not None:
            self._enforcer.start()
        self._patched = patch_clients(self._meter)
        patch_threads()
        atexit.register(self._at_exit)

    def _uninstrument(self, **kwargs: Any) -> None:
        unpatch_clients(self._patched)
        unpatch_threads()
        atexit.unregister(self._at_exit)
        self._patched = []
        self._meter = None
        if self._enforcer is not None:
            self._enforcer.stop()
            self._enforcer = None
        self._recorder.shutdown()
        self._sink.flush(30_000)
        self._sink.shutdown()

    def _at_exit(self) -> None:
        self.force_flush(5_000)
        self._sink.shutdown()

    @property
    def config(self) -> P402Config | None:
        """The settings in force, or ``None`` when not instrumented."""
        return self._meter.config if self._meter else None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Record and export every finished economic event now; ``True`` when all were
        delivered (none waits in the spool)."""
        if self._meter is None:
            return True
        recorded = self._recorder.flush(timeout_millis / 1000)
        return self._sink.flush(timeout_millis) and recorded
