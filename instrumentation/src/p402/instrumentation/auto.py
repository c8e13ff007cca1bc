"""What ``opentelemetry-instrument`` loads through the ``p402`` entry point.

OpenTelemetry's loader instantiates the entry point's object and calls its ``instrument()``.
Had that raised, the loader would log two tracebacks and stop loading every instrumentation
after it, so a mistyped ``P402_*`` variable would turn off all of the application's
OpenTelemetry. Here a setting P402 cannot use is logged as one error that names it, P402
stays off for the process, and the application and its other instrumentations run as they
would without P402.
"""

from __future__ import annotations

import logging
from typing import Any

from p402.instrumentation.exceptions import ConfigurationError

__all__ = ["AutoInstrumentation"]

_log = logging.getLogger("p402.instrumentation")


class AutoInstrumentation:
    """The ``p402`` entry point: :class:`~p402.instrumentation.P402Instrumentor` with its
    settings from the ``P402_*`` variables."""

    def instrument(self, **kwargs: Any) -> None:
        from p402.instrumentation.instrumentor import P402Instrumentor

        try:
            P402Instrumentor().instrument(**kwargs)
        except ConfigurationError as error:
            _log.error("P402 is not metering this process: %s", error)
