"""The exceptions the instrumentation raises.

P402Error
 └── ConfigurationError (also a ValueError): a setting that cannot be used
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "P402Error"]


class P402Error(Exception):
    """Base class of every P402 error."""


class ConfigurationError(P402Error, ValueError):
    """A keyword or environment setting that P402 cannot use; the message says which."""
