"""A tenant's own redaction patterns: what the receiver also replaces in content it keeps
under ``redacted_trace`` or ``private_gateway``, besides e-mail addresses, phone and card
numbers and secrets.

They are regular expressions in RE2's syntax (Python's, without backreferences and
lookaround), run with RE2 (``google-re2``): its time is linear in the text, so no pattern a
tenant writes can hold the receiver up. Python's ``re`` backtracks: ``(a+)+$`` alone would
take hours over a long prompt.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Final

import re2  # type: ignore[import-untyped]

__all__ = [
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "InvalidPatterns",
    "compiled_patterns",
    "patterns_from_column",
    "patterns_to_column",
    "read_patterns",
]

MAX_PATTERNS: Final = 50
MAX_PATTERN_LENGTH: Final = 500


class InvalidPatterns(ValueError):
    """Patterns that cannot be used; the message names the first one and why."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is answered, not logged
    return options


def _compile(pattern: str) -> Any:
    return re2.compile(pattern, options=_options())


def read_patterns(value: object) -> tuple[str, ...]:
    """The patterns of a setting (a JSON list of strings), each checked by compiling it."""
    if not isinstance(value, list):
        raise InvalidPatterns("a JSON list of regular expressions")
    if len(value) > MAX_PATTERNS:
        raise InvalidPatterns(f"at most {MAX_PATTERNS} patterns")
    for index, pattern in enumerate(value):
        if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_LENGTH:
            raise InvalidPatterns(
                f"[{index}]: a regular expression of 1 to {MAX_PATTERN_LENGTH} characters"
            )
        try:
            _compile(pattern)
        except re2.error as error:
            reason = error.args[0] if error.args else error
            if isinstance(reason, bytes):
                reason = reason.decode(errors="replace")
            raise InvalidPatterns(
                f"[{index}]: {pattern!r} is not an RE2 regular expression ({reason}); RE2 "
                "has no backreferences and no lookaround"
            ) from None
    return tuple(value)


@lru_cache(maxsize=256)
def compiled_patterns(patterns: tuple[str, ...]) -> Any:
    """One RE2 pattern matching any of ``patterns`` (``None`` for none), compiled once."""
    if not patterns:
        return None
    return _compile("|".join(f"(?:{pattern})" for pattern in patterns))


def patterns_to_column(patterns: tuple[str, ...]) -> str | None:
    return json.dumps(list(patterns), ensure_ascii=False) if patterns else None


def patterns_from_column(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()
