"""``P402Instrumentor``: meter every LLM call made through ``httpx`` or ``httpx2``.

    from p402.instrumentation import P402Instrumentor

    P402Instrumentor().instrument()  # settings from P402_* variables
    P402Instrumentor().instrument(endpoint="http://p402:4318", api_key="...")

Every keyword is optional (see :mod:`p402.instrumentation.config`); ``tracer_provider``
replaces P402's own always-on export pipeline. ``uninstrument()`` restores the clients'
``send`` methods exactly. The ``p402`` entry point of ``opentelemetry_instrumentor`` lets
``opentelemetry-instrument python app.py`` enable it with no code change.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_tracer

from p402.instrumentation._metering import Meter
from p402.instrumentation._patches import patch_clients, unpatch_clients
from p402.instrumentation._pipeline import build_tracer_provider
from p402.instrumentation._threads import patch_threads, unpatch_threads
from p402.instrumentation.config import P402Config
from p402.instrumentation.package import _instruments
from p402.instrumentation.privacy import content_policy
from p402.instrumentation.version import __version__

__all__ = ["P402Instrumentor"]


class P402Instrumentor(BaseInstrumentor):  # type: ignore[misc]
    """See the module docstring."""

    _patched: list[type]
    _own_provider: TracerProvider | None
    _meter: Meter | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.pop("tracer_provider", None)
        config = P402Config.load(**kwargs)
        self._own_provider = None
        if tracer_provider is None:
            tracer_provider = self._own_provider = build_tracer_provider(config)
        tracer = get_tracer("p402.instrumentation", __version__, tracer_provider=tracer_provider)
        content = content_policy(
            config.privacy_mode,
            api_key=config.api_key,
            fingerprint_key=config.fingerprint_key,
            signing_key=config.signing_key,
            redact_patterns=config.redact_patterns,
        )
        self._meter = Meter(config, tracer, content)
        self._patched = patch_clients(self._meter)
        patch_threads()

    def _uninstrument(self, **kwargs: Any) -> None:
        unpatch_clients(self._patched)
        unpatch_threads()
        self._patched = []
        self._meter = None
        if self._own_provider is not None:
            self._own_provider.shutdown()
            self._own_provider = None

    @property
    def config(self) -> P402Config | None:
        """The settings in force, or ``None`` when not instrumented."""
        return self._meter.config if self._meter else None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished economic event now; ``True`` when all were sent."""
        if self._own_provider is None:
            return True
        return self._own_provider.force_flush(timeout_millis)
