"""What a format parser reads out of one exchange, independent of the provider.

Every format provides the same four readings: which path is which API (:class:`Endpoint`),
what the application asked for (:class:`RequestFacts`), what came back
(:class:`ResponseFacts`), and a :class:`StreamAccumulator` that builds the same facts
event by event from a streamed response, keeping no more than the facts (and the output text
only when content is captured).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import Operation

JsonObject = Mapping[str, Any]
Message = dict[str, Any]
"""A message in the GenAI semantic-convention shape: ``{"role": ..., "parts": [...]}``."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A metered API of a format: its ``gen_ai.operation.name`` and its own name."""

    operation: Operation
    api: str
    streams: bool = False
    """Whether the path itself asks for a stream (Gemini ``:streamGenerateContent``)."""


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


class StreamAccumulator(Protocol):
    """Builds :class:`ResponseFacts` from a stream's events as they arrive."""

    finished: bool
    """Whether the format's own end-of-response event was seen."""

    def wants(self, name: str | None, data: bytes) -> bool:
        """Whether this event, still undecoded, can change the facts (a cheap byte check:
        most events of a stream only carry text the accumulator does not keep)."""

    def on_event(self, name: str | None, data: JsonObject) -> None:
        """One decoded event (SSE ``event:`` name, if any, and its JSON data)."""

    def facts(self) -> ResponseFacts: ...

    def output_messages(self) -> list[Message]:
        """The output text seen so far (only collected when asked to)."""


class ExchangeFormat(Protocol):
    """One provider wire format: which paths it meters and how to read them."""

    def endpoint(self, path: str) -> Endpoint | None:
        """The metered API at ``path``, or ``None`` for calls that are not LLM usage."""

    def request_facts(self, endpoint: Endpoint, path: str, body: JsonObject) -> RequestFacts:
        """Model, streaming and limits the application asked for."""

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        """Model used, id, finish reasons, usage and any provider-reported cost."""

    def stream_accumulator(self, endpoint: Endpoint, *, collect_text: bool) -> StreamAccumulator:
        """A fresh accumulator for a streamed response of ``endpoint``."""

    def input_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        """The request's content (system instructions and messages) as GenAI messages."""

    def output_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        """The response's content as GenAI messages."""


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


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text_message(role: str, texts: list[str], finish_reason: str | None = None) -> Message:
    message: Message = {
        "role": role,
        "parts": [{"type": "text", "content": text} for text in texts],
    }
    if finish_reason:
        message["finish_reason"] = finish_reason
    return message


def content_parts(content: Any) -> list[dict[str, Any]]:
    """GenAI parts from a string or a list of typed blocks (``text``/``input_text``/…)."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in as_list(content):
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
            continue
        block = as_object(block)
        text = block.get("text")
        if isinstance(text, str):
            parts.append({"type": "text", "content": text})
        elif block.get("type"):
            parts.append({"type": str(block["type"])})
    return parts
