"""The instrumentation's settings: keywords to ``instrument()`` over ``P402_*`` variables.

=========================  ================================  ==========================
keyword                    environment                       default
=========================  ================================  ==========================
``endpoint``               ``P402_ENDPOINT``                 ``http://127.0.0.1:4318``
``api_key``                ``P402_API_KEY``                  none
``privacy_mode``           ``P402_PRIVACY_MODE``             ``metadata_only``
``providers``              ``P402_PROVIDERS``                none
``enforcement``            ``P402_ENFORCEMENT``              ``cached``
``fail_mode``              ``P402_FAIL_MODE``                ``open``
``owner_defaults``         ``P402_OWNER_<DIMENSION>``        none
``include_stream_usage``   ``P402_INCLUDE_STREAM_USAGE``     ``true``
=========================  ================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar

from p402.instrumentation.exceptions import ConfigurationError
from p402.instrumentation.providers import ProviderRoute, parse_providers
from p402.instrumentation.vocabulary import OWNER_DIMENSIONS, PrivacyMode

__all__ = ["DEFAULT_ENDPOINT", "Enforcement", "FailMode", "P402Config"]

DEFAULT_ENDPOINT: Final = "http://127.0.0.1:4318"


class Enforcement(StrEnum):
    OFF = "off"
    CACHED = "cached"
    STRICT = "strict"


class FailMode(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


_E = TypeVar("_E", bound=StrEnum)


def _choice(kind: type[_E], value: str | _E, setting: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ConfigurationError(f"{setting}={value!r} is not one of {allowed}") from None


def _flag(value: str, setting: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{setting}={value!r} is not a boolean (true or false)")


@dataclass(frozen=True)
class P402Config:
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = None
    privacy_mode: PrivacyMode = PrivacyMode.METADATA_ONLY
    providers: tuple[tuple[str, ProviderRoute], ...] = ()
    enforcement: Enforcement = Enforcement.CACHED
    fail_mode: FailMode = FailMode.OPEN
    owner_defaults: Mapping[str, str] = field(default_factory=dict)
    include_stream_usage: bool = True

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **keywords: Any) -> P402Config:
        """Settings from ``keywords``, falling back to the environment, then to defaults."""
        env = os.environ if environ is None else environ
        unknown = set(keywords) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigurationError(f"unknown P402 setting(s): {', '.join(sorted(unknown))}")

        def pick(name: str, variable: str) -> Any:
            if keywords.get(name) is not None:
                return keywords[name]
            return env.get(variable) or None

        endpoint = pick("endpoint", "P402_ENDPOINT") or DEFAULT_ENDPOINT
        providers = pick("providers", "P402_PROVIDERS") or ()
        if isinstance(providers, str):
            providers = parse_providers(providers)
        owner_defaults = {
            dimension: value
            for dimension in OWNER_DIMENSIONS
            if (value := env.get(f"P402_OWNER_{dimension.upper()}"))
        }
        owner_defaults.update(keywords.get("owner_defaults") or {})
        stream_usage = pick("include_stream_usage", "P402_INCLUDE_STREAM_USAGE")
        if isinstance(stream_usage, str):
            stream_usage = _flag(stream_usage, "P402_INCLUDE_STREAM_USAGE")
        return cls(
            endpoint=str(endpoint).rstrip("/"),
            api_key=pick("api_key", "P402_API_KEY"),
            privacy_mode=_choice(
                PrivacyMode,
                pick("privacy_mode", "P402_PRIVACY_MODE") or PrivacyMode.METADATA_ONLY,
                "P402_PRIVACY_MODE",
            ),
            providers=tuple(providers),
            enforcement=_choice(
                Enforcement,
                pick("enforcement", "P402_ENFORCEMENT") or Enforcement.CACHED,
                "P402_ENFORCEMENT",
            ),
            fail_mode=_choice(
                FailMode, pick("fail_mode", "P402_FAIL_MODE") or FailMode.OPEN, "P402_FAIL_MODE"
            ),
            owner_defaults=owner_defaults,
            include_stream_usage=True if stream_usage is None else bool(stream_usage),
        )
