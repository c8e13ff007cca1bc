"""P402 instrumentation: every LLM HTTP call becomes a priced, owned economic-event span.

from p402.instrumentation import P402Instrumentor, owner

P402Instrumentor().instrument()
with owner(department="legal", employee="alice", session="sess_abc"):
    client.chat.completions.create(model="gpt-5-mini", messages=[...])
"""

from p402.instrumentation.exceptions import ConfigurationError, P402Error
from p402.instrumentation.instrumentor import P402Instrumentor
from p402.instrumentation.owner import current_owner, owner
from p402.instrumentation.version import __version__

__all__ = [
    "ConfigurationError",
    "P402Error",
    "P402Instrumentor",
    "__version__",
    "current_owner",
    "owner",
]
