"""Which HTTP requests are LLM calls, and to which provider and wire format they go.

Known provider hosts are built in. Other bases (self-hosted gateways, regional endpoints,
local stand-ins) are configured with ``P402_PROVIDERS``: comma-separated
``NAME[:FORMAT]=BASE_URL`` entries. A request whose URL starts with ``BASE_URL`` is metered
as provider ``NAME`` in format ``FORMAT``, which defaults to the known format of a known name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from p402.instrumentation.exceptions import ConfigurationError
from p402.instrumentation.vocabulary import ApiFormat

__all__ = ["KNOWN_FORMATS", "ProviderRegistry", "ProviderRoute", "parse_providers"]

KNOWN_FORMATS: Final = {
    "openai": ApiFormat.OPENAI,
    "azure.ai.openai": ApiFormat.OPENAI,
    "openrouter": ApiFormat.OPENAI,
    "anthropic": ApiFormat.ANTHROPIC,
    "aws.bedrock": ApiFormat.ANTHROPIC,
    "gcp.gemini": ApiFormat.GEMINI,
    "gcp.vertex_ai": ApiFormat.GEMINI,
}
"""The wire format each well-known ``gen_ai.provider.name`` speaks by default."""


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    """Where a metered request goes: the provider's name and the format it speaks."""

    name: str
    format: ApiFormat


@dataclass(frozen=True, slots=True)
class _ConfiguredBase:
    base_url: str
    route: ProviderRoute


def parse_providers(spec: str) -> tuple[tuple[str, ProviderRoute], ...]:
    """Parse a ``P402_PROVIDERS`` value into ``(base_url, route)`` pairs."""
    entries = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name_part, sep, base_url = entry.partition("=")
        base_url = base_url.strip()
        if not sep or not base_url or not name_part.strip():
            raise ConfigurationError(
                f"P402_PROVIDERS entry {entry!r} is not NAME[:FORMAT]=BASE_URL"
            )
        parts = urlsplit(base_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or " " in base_url
            or "://" in base_url.partition("://")[2]  # two entries run together
        ):
            raise ConfigurationError(
                f"P402_PROVIDERS entry {entry!r}: BASE_URL must be an http:// or https:// URL "
                "with a host (entries are separated by commas)"
            )
        name, _, format_name = (part.strip() for part in name_part.partition(":"))
        if format_name:
            try:
                api_format = ApiFormat(format_name)
            except ValueError:
                allowed = ", ".join(f.value for f in ApiFormat)
                raise ConfigurationError(
                    f"P402_PROVIDERS entry {entry!r}: unknown format {format_name!r} "
                    f"(one of {allowed})"
                ) from None
        elif name in KNOWN_FORMATS:
            api_format = KNOWN_FORMATS[name]
        else:
            raise ConfigurationError(
                f"P402_PROVIDERS entry {entry!r}: {name!r} is not a known provider, "
                f"so its format must be given as {name}:FORMAT"
            )
        entries.append((base_url.rstrip("/"), ProviderRoute(name, api_format)))
    return tuple(entries)


_OPENAI: Final = ProviderRoute("openai", ApiFormat.OPENAI)
_AZURE: Final = ProviderRoute("azure.ai.openai", ApiFormat.OPENAI)
_OPENROUTER: Final = ProviderRoute("openrouter", ApiFormat.OPENAI)
_ANTHROPIC: Final = ProviderRoute("anthropic", ApiFormat.ANTHROPIC)
_GEMINI: Final = ProviderRoute("gcp.gemini", ApiFormat.GEMINI)
_VERTEX_GEMINI: Final = ProviderRoute("gcp.vertex_ai", ApiFormat.GEMINI)
_VERTEX_ANTHROPIC: Final = ProviderRoute("gcp.vertex_ai", ApiFormat.ANTHROPIC)
_BEDROCK_ANTHROPIC: Final = ProviderRoute("aws.bedrock", ApiFormat.ANTHROPIC)
_BEDROCK_OPENAI: Final = ProviderRoute("aws.bedrock", ApiFormat.OPENAI)


def _known_route(host: str, path: str) -> ProviderRoute | None:
    if host == "api.openai.com" or host.endswith(".api.openai.com"):
        return _OPENAI
    if host.endswith(".openai.azure.com"):
        return _AZURE
    if host == "api.anthropic.com":
        return _ANTHROPIC
    if host == "generativelanguage.googleapis.com":
        return _GEMINI
    if host.endswith("aiplatform.googleapis.com"):
        return _VERTEX_ANTHROPIC if "/publishers/anthropic/" in path else _VERTEX_GEMINI
    if host.startswith("bedrock-runtime.") and host.endswith(".amazonaws.com"):
        return _BEDROCK_OPENAI if path.startswith("/openai/") else _BEDROCK_ANTHROPIC
    if host == "openrouter.ai" and path.startswith("/api/"):
        return _OPENROUTER
    return None


class ProviderRegistry:
    """Maps a request URL to its provider route, or ``None`` for traffic that is not metered.

    Configured bases are matched first, longest first, so a configured base can refine a
    known host.
    """

    def __init__(self, configured: Iterable[tuple[str, ProviderRoute]] = ()) -> None:
        self._configured = tuple(
            _ConfiguredBase(base_url, route)
            for base_url, route in sorted(configured, key=lambda item: -len(item[0]))
        )

    def match(self, url: str, host: str, path: str) -> ProviderRoute | None:
        for base in self._configured:
            if url.startswith(base.base_url) and (
                len(url) == len(base.base_url) or url[len(base.base_url)] in "/?#:"
            ):
                return base.route
        return _known_route(host, path)
