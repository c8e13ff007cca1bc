"""The instrumentation's settings: keywords to ``instrument()`` over ``P402_*`` variables.

=========================  ================================  =======================================
keyword                    environment                       default
=========================  ================================  =======================================
``endpoint``               ``P402_ENDPOINT``                 ``http://127.0.0.1:4318``
``api_key``                ``P402_API_KEY``                  none
``privacy_mode``           ``P402_PRIVACY_MODE``             ``metadata_only``
``providers``              ``P402_PROVIDERS``                none
``enforcement``            ``P402_ENFORCEMENT``              ``cached``
``fail_mode``              ``P402_FAIL_MODE``                ``open``
``owner_defaults``         ``P402_OWNER_<DIMENSION>``        none (see below)
``include_stream_usage``   ``P402_INCLUDE_STREAM_USAGE``     ``true``
``spool_dir``              ``P402_SPOOL_DIR``                ``$XDG_CACHE_HOME/p402/spool/<hash>``
``spool_max_bytes``        ``P402_SPOOL_MAX_BYTES``          ``67108864`` (64 MiB)
``fingerprint_key``        ``P402_FINGERPRINT_KEY``          derived from the API key
``signing_key``            ``P402_SIGNING_KEY``              derived from the API key
``redact_patterns``        ``P402_REDACT_PATTERNS``          none (a JSON array of regexes)
=========================  ================================  =======================================

``owner_defaults`` are also read from the service's resource: the ``p402.owner.<dimension>``
entries of ``OTEL_RESOURCE_ATTRIBUTES`` (``P402_OWNER_<DIMENSION>`` wins over them, keywords
over both).

``spool_dir`` holds the batches of events the endpoint could not take yet (see
:mod:`p402.instrumentation._spool`); by default it is ``~/.cache/p402/spool/`` (or
``$XDG_CACHE_HOME/p402/spool/``) followed by a short hash of the endpoint. Processes may
share a directory, even with different endpoints or API keys. ``spool_max_bytes`` bounds it
(``0`` turns the spool off): beyond it, undeliverable events are dropped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from p402.instrumentation.exceptions import ConfigurationError
from p402.instrumentation.privacy import TENANT_KEY
from p402.instrumentation.providers import ProviderRoute, parse_providers
from p402.instrumentation.vocabulary import OWNER_ATTRIBUTE_PREFIX, OWNER_DIMENSIONS, PrivacyMode

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_SPOOL_MAX_BYTES",
    "Enforcement",
    "FailMode",
    "P402Config",
    "default_spool_dir",
]

DEFAULT_ENDPOINT: Final = "http://127.0.0.1:4318"
DEFAULT_SPOOL_MAX_BYTES: Final = 64 * 1024 * 1024


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


def _byte_count(value: object, setting: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value.strip())
    else:
        count = -1
    if count < 0:
        raise ConfigurationError(f"{setting}={value!r} is not a number of bytes (0 or more)")
    return count


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ConfigurationError(
            f"P402_ENDPOINT={value!r} is not the http:// or https:// URL of a P402 server"
        )
    return value.rstrip("/")


_OWNER_VARIABLES: Final = frozenset(f"P402_OWNER_{d.upper()}" for d in OWNER_DIMENSIONS)


def _check_owner_variables(env: Mapping[str, str]) -> None:
    """A ``P402_OWNER_*`` variable that names no owner dimension (a typo) is refused rather
    than ignored: its events would go unattributed."""
    for variable in env:
        if variable.startswith("P402_OWNER_") and variable not in _OWNER_VARIABLES:
            allowed = ", ".join(sorted(_OWNER_VARIABLES))
            raise ConfigurationError(f"{variable} names no owner dimension (one of {allowed})")


_HEX_DIGITS: Final = re.compile(r"(0[xX])?[0-9a-fA-F]{32,}")
"""What can only be meant as a key in hex."""
_KEY_SOURCE: Final = "copy the 64 hex digits PUT /v1/settings showed"


def _fingerprint_key(value: str | None) -> str | None:
    """The tenant's 64 hex digits, or any other text (fingerprints need only be keyed alike
    everywhere); a long run of hex digits that is not a tenant's key (a digit lost in
    copying, a ``0x``) is refused rather than used as text."""
    if value is None or TENANT_KEY.fullmatch(value) or not _HEX_DIGITS.fullmatch(value):
        return value
    raise ConfigurationError(
        f"P402_FINGERPRINT_KEY looks like a key in hex but is not a tenant's: {_KEY_SOURCE}"
    )


def _signing_key(value: str | None) -> str | None:
    """The tenant's signing key, 64 hex digits: the receiver verifies signed events with it
    (or with the API key's hash), and with no other text, so any other value would have
    every signed event refused."""
    if value is None or TENANT_KEY.fullmatch(value):
        return value
    raise ConfigurationError(
        f"P402_SIGNING_KEY is not the tenant's signing key (64 hex digits): {_KEY_SOURCE}"
    )


def _patterns(value: str) -> tuple[str, ...]:
    try:
        patterns = json.loads(value)
    except ValueError:
        patterns = None
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigurationError(
            f"P402_REDACT_PATTERNS={value!r} is not a JSON array of regular expressions"
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigurationError(
                f"P402_REDACT_PATTERNS: {pattern!r} is not a regular expression ({error})"
            ) from None
    return tuple(patterns)


def _resource_owners(resource_attributes: str) -> dict[str, str]:
    """The ``p402.owner.<dimension>`` entries of ``OTEL_RESOURCE_ATTRIBUTES``
    (``key=value,...``, values percent-encoded), read as OpenTelemetry's SDK reads them."""
    owners: dict[str, str] = {}
    for pair in resource_attributes.split(","):
        key, equals, value = pair.partition("=")
        key = key.strip()
        dimension = key.removeprefix(OWNER_ATTRIBUTE_PREFIX)
        text = unquote(value.strip())
        if equals and text and dimension != key and dimension in OWNER_DIMENSIONS:
            owners[dimension] = text
    return owners


def default_spool_dir(endpoint: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/p402/spool/<hash of endpoint>``, ``~/.cache`` without the variable."""
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "p402" / "spool" / hashlib.sha256(endpoint.encode()).hexdigest()[:12]


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
    spool_dir: Path | None = None  # None: default_spool_dir(endpoint); load() always sets it
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    fingerprint_key: str | None = None
    signing_key: str | None = None
    redact_patterns: tuple[str, ...] = ()

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

        endpoint = _endpoint(str(pick("endpoint", "P402_ENDPOINT") or DEFAULT_ENDPOINT))
        providers = pick("providers", "P402_PROVIDERS") or ()
        if isinstance(providers, str):
            providers = parse_providers(providers)
        _check_owner_variables(env)
        owner_defaults = _resource_owners(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        owner_defaults.update(
            (dimension, value)
            for dimension in OWNER_DIMENSIONS
            if (value := env.get(f"P402_OWNER_{dimension.upper()}"))
        )
        owner_defaults.update(keywords.get("owner_defaults") or {})
        stream_usage = pick("include_stream_usage", "P402_INCLUDE_STREAM_USAGE")
        if isinstance(stream_usage, str):
            stream_usage = _flag(stream_usage, "P402_INCLUDE_STREAM_USAGE")
        spool_dir = pick("spool_dir", "P402_SPOOL_DIR")
        redact_patterns = pick("redact_patterns", "P402_REDACT_PATTERNS") or ()
        if isinstance(redact_patterns, str):
            redact_patterns = _patterns(redact_patterns)
        spool_max_bytes = pick("spool_max_bytes", "P402_SPOOL_MAX_BYTES")
        return cls(
            endpoint=endpoint,
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
            fingerprint_key=_fingerprint_key(pick("fingerprint_key", "P402_FINGERPRINT_KEY")),
            signing_key=_signing_key(pick("signing_key", "P402_SIGNING_KEY")),
            redact_patterns=tuple(redact_patterns),
            include_stream_usage=True if stream_usage is None else bool(stream_usage),
            spool_dir=(
                Path(spool_dir).expanduser() if spool_dir else default_spool_dir(endpoint, env)
            ),
            spool_max_bytes=(
                DEFAULT_SPOOL_MAX_BYTES
                if spool_max_bytes is None
                else _byte_count(spool_max_bytes, "P402_SPOOL_MAX_BYTES")
            ),
        )
