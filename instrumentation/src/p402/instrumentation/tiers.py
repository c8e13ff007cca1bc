"""Model tiers (economy < standard < premium): the built-in table and the lookup.

A department policy bounds the models its calls may use by tier (SPEC §9: ``min_model`` and
``max_model`` are model names whose tier is the bound). A tenant may override the tier of any
model. Names are matched as given, then with a trailing date or version suffix removed
(``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``, ``gpt-4o-2024-08-06`` → ``gpt-4o``),
then with a router prefix removed (``anthropic/claude-sonnet-4.5``); dots and dashes between
digits are the same (``claude-sonnet-4.5`` = ``claude-sonnet-4-5``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Final

__all__ = ["DEFAULT_TIERS", "ModelTier", "canonical_model", "tier_of"]


class ModelTier(StrEnum):
    ECONOMY = "economy"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def rank(self) -> int:
        return _RANK[self._value_]  # by value: hashing a str is cheaper than an enum member


_RANK: Final = {"economy": 0, "standard": 1, "premium": 2}

_E, _S, _P = ModelTier.ECONOMY, ModelTier.STANDARD, ModelTier.PREMIUM

DEFAULT_TIERS: Final[Mapping[str, ModelTier]] = {
    # OpenAI
    "gpt-3.5-turbo": _E,
    "gpt-4o-mini": _E,
    "gpt-4.1-mini": _E,
    "gpt-4.1-nano": _E,
    "gpt-5-mini": _E,
    "gpt-5-nano": _E,
    "o4-mini": _S,
    "o3-mini": _S,
    "o1-mini": _S,
    "gpt-4o": _S,
    "gpt-4.1": _S,
    "gpt-4-turbo": _S,
    "gpt-5": _S,
    "gpt-5.1": _S,
    "gpt-4": _P,
    "gpt-4.5-preview": _P,
    "o1": _P,
    "o3": _P,
    "o1-pro": _P,
    "o3-pro": _P,
    "gpt-5-pro": _P,
    # Anthropic
    "claude-3-haiku": _E,
    "claude-3-5-haiku": _E,
    "claude-haiku-4-5": _E,
    "claude-3-5-sonnet": _S,
    "claude-3-7-sonnet": _S,
    "claude-sonnet-4": _S,
    "claude-sonnet-4-5": _S,
    "claude-3-opus": _P,
    "claude-opus-4": _P,
    "claude-opus-4-1": _P,
    "claude-opus-4-5": _P,
    # Google
    "gemini-1.5-flash": _E,
    "gemini-2.0-flash": _E,
    "gemini-2.0-flash-lite": _E,
    "gemini-2.5-flash": _E,
    "gemini-2.5-flash-lite": _E,
    "gemini-1.5-pro": _S,
    "gemini-2.5-pro": _P,
    "gemini-3-pro-preview": _P,
}
"""The built-in tier of well-known chat models (embedding models have no tier)."""

_SUFFIX: Final = re.compile(
    r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest|preview(?:-\d{2}-\d{2,4})?|\d{3,4}|v\d+(?::\d+)?)$"
)
_DIGIT_DOT: Final = re.compile(r"(?<=\d)\.(?=\d)")


def canonical_model(model: str) -> str:
    """``model`` lower-cased, without a router (``anthropic/``) or ``models/`` prefix."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = name.removeprefix("models/")
    return name


@lru_cache(maxsize=4096)
def _candidates(model: str) -> tuple[str, ...]:
    """The table keys ``model`` may be found under, most specific first (cached: the
    pre-call policy check asks on every call)."""
    name = canonical_model(model)
    found = [name]
    while (shorter := _SUFFIX.sub("", name)) != name:
        name = shorter
        found.append(name)
    found += [_DIGIT_DOT.sub("-", n) for n in found]
    return tuple(dict.fromkeys(_DIGIT_DOT.sub("-", n) for n in found))


def _normalise_keys(tiers: Mapping[str, ModelTier | str]) -> dict[str, ModelTier]:
    return {_DIGIT_DOT.sub("-", canonical_model(k)): ModelTier(v) for k, v in tiers.items()}


_DEFAULTS_NORMALISED: Final = _normalise_keys(DEFAULT_TIERS)


def tier_of(model: str, overrides: Mapping[str, ModelTier | str] | None = None) -> ModelTier | None:
    """The tier of ``model``: the tenant's ``overrides`` first, then the built-in table;
    ``None`` for a model neither knows."""
    tables = [_DEFAULTS_NORMALISED]
    if overrides:
        tables.insert(0, _normalise_keys(overrides))
    for table in tables:
        for key in _candidates(model):
            if key in table:
                return table[key]
    return None
