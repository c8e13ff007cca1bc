"""What a format parser reads out of one exchange, independent of the provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import Operation

JsonObject = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A metered API of a format: its ``gen_ai.operation.name`` and its own name."""

    operation: Operation
    api: str


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str | None = None
    stream: bool = False
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    usage: TokenUsage = field(default_factory=TokenUsage)
    provider_cost: Decimal | None = None


class ExchangeFormat(Protocol):
    """One provider wire format: which paths it meters and how to read them."""

    def endpoint(self, path: str) -> Endpoint | None:
        """The metered API at ``path``, or ``None`` for calls that are not LLM usage."""

    def request_facts(self, endpoint: Endpoint, path: str, body: JsonObject) -> RequestFacts:
        """Model, streaming and limits the application asked for."""

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        """Model used, id, finish reasons, usage and any provider-reported cost."""


def as_int(value: Any) -> int | None:
    """A token count, or ``None`` when absent or not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_object(value: Any) -> JsonObject:
    return value if isinstance(value, Mapping) else {}
