"""What a format parser reads out of one exchange, independent of the provider.

Every format provides the same four readings: which path is which API (:class:`Endpoint`),
what the application asked for (:class:`RequestFacts`), what came back
(:class:`ResponseFacts`), and a :class:`StreamAccumulator` that builds the same facts
event by event from a streamed response, keeping no more than the facts (and the output text
only when content is captured).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, NamedTuple, Protocol

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


class RequestFacts(NamedTuple):
    model: str | None = None
    stream: bool = False
    max_tokens: int | None = None


class ResponseFacts(NamedTuple):
    model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    usage: TokenUsage = TokenUsage()
    provider_cost: Decimal | None = None


class Signal:
    """What marks the stream events an accumulator wants: one of ``keys`` as a JSON object
    key, with a value other than null when ``non_null`` (else anywhere in the event).

    :meth:`search` decides one event. :meth:`positions` finds the marks in a run of raw
    events without looking at each event: most events of a stream carry the same keys with
    null values, so counting the keys and their compact nulls (in C) tells how many marks
    there are, and the search from the end (where they usually are) stops at the last one.
    """

    __slots__ = ("_keys", "_non_null", "_pattern", "find")

    def __init__(self, *keys: str, non_null: bool) -> None:
        self._keys = tuple((f'"{key}"'.encode(), f'"{key}":null'.encode()) for key in keys)
        self._non_null = non_null
        names = b"|".join(re.escape(key.encode()) for key in keys)
        value = rb"\s*:\s*[^\sn]" if non_null else b""
        self._pattern = re.compile(rb'"(?:' + names + rb')"' + value)
        self.find: Callable[[bytes], object] = self._find
        """Whether ``data`` (one event) carries the mark (truthy) or not (``None``):
        :meth:`search` for the per-event checks."""

    def _find(self, data: bytes) -> object:
        # Byte counts first (in C, several times faster than the pattern): when every
        # occurrence of every key is a compact null, or there is none, nothing can match.
        for quoted, null in self._keys:
            count = data.count(quoted)
            if count and (not self._non_null or count != data.count(null)):
                return self._pattern.search(data)
        return None

    def search(self, data: bytes) -> bool:
        """Whether ``data`` (one event) carries the mark."""
        return self._find(data) is not None

    def positions(self, data: bytes, start: int, end: int) -> list[int]:
        """Where the marks in ``data[start:end]`` begin (in no particular order)."""
        found: list[int] = []
        match = self._pattern.match
        for quoted, null in self._keys:
            expected = data.count(quoted, start, end)
            if expected and self._non_null:
                # An upper bound: only nulls written without spaces are counted.
                expected -= data.count(null, start, end)
            at = end
            while expected:
                at = data.rfind(quoted, start, at)
                if at == -1:
                    break
                if match(data, at, end):
                    found.append(at)
                    expected -= 1
        return found


class StreamAccumulator(Protocol):
    """Builds :class:`ResponseFacts` from a stream's events as they arrive."""

    finished: bool
    """Whether the format's own end-of-response event was seen."""

    @property
    def read_all(self) -> Callable[[bytes], bool] | None:
        """Reads a run of events without names at once, their data given as one JSON array,
        in order; it returns ``False``, having read nothing, when the array is not what it
        expects (the reader then reads the events one by one). ``None`` when the accumulator
        reads event by event only. For a short run, one typed decode costs less than
        finding and decoding its events."""

    def wants(self, name: str | None, data: bytes) -> bool:
        """Whether this event, still undecoded, can change the facts (a cheap byte check:
        most events of a stream only carry text the accumulator does not keep)."""

    @property
    def signal(self) -> Signal | None:
        """What every event :meth:`wants` would still take contains, so that a reader can
        skip the others without splitting them out; ``None`` while every event must be looked
        at. Once not ``None`` it stays so."""

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


_EMPTY: Final[JsonObject] = MappingProxyType({})


def as_int(value: Any) -> int | None:
    """A token count, or ``None`` when absent or not a whole number."""
    if type(value) is int:  # the usual case, first (bool is an int subclass, never a count)
        return value
    if value is None:  # the next most usual: absent
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (Decimal, float)) and value == int(value):
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_object(value: Any) -> JsonObject:
    if type(value) is dict:  # what the JSON decoder makes, without an ABC check
        return value
    return value if isinstance(value, Mapping) else _EMPTY


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
