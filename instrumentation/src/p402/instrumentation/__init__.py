"""P402 instrumentation: every LLM HTTP call becomes a priced, owned economic-event span.

from p402.instrumentation import P402Instrumentor, owner

P402Instrumentor().instrument()
with owner(department="legal", employee="alice", session="sess_abc"):
    client.chat.completions.create(model="gpt-5-mini", messages=[...])

``P402Instrumentor`` is loaded when first used: importing one of the package's own modules
(``p402.instrumentation.vocabulary``, ``.money``, ...) does not load OpenTelemetry's SDK and
the client hooks with it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from p402.instrumentation.exceptions import ConfigurationError, P402Error

# Imported here, not when used: the function ``owner`` must take the place of the submodule
# of the same name, which importing the submodule binds on the package.
from p402.instrumentation.owner import current_owner, owner
from p402.instrumentation.version import __version__

if TYPE_CHECKING:
    from p402.instrumentation.instrumentor import P402Instrumentor

__all__ = [
    "ConfigurationError",
    "P402Error",
    "P402Instrumentor",
    "__version__",
    "current_owner",
    "owner",
]


def __getattr__(name: str) -> Any:
    if name != "P402Instrumentor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = import_module("p402.instrumentation.instrumentor").P402Instrumentor
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
