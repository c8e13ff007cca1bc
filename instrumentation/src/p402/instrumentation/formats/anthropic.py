"""The Anthropic Messages format, direct and through Bedrock or Vertex AI hosts.

Usage conventions: ``input_tokens`` EXCLUDES ``cache_creation_input_tokens`` and
``cache_read_input_tokens``, so the total input is their sum; ``output_tokens`` includes
thinking (``output_tokens_details.thinking_tokens`` where reported).

Streams: ``message_start`` carries the message (id, model) and the input-side usage; each
``message_delta`` carries the cumulative usage so far, possibly only ``output_tokens``. Its
fields overwrite the earlier ones, field by field: they are never summed.

On Bedrock (``/model/{model}/invoke``, ``/invoke-with-response-stream``) and Vertex AI
(``…/publishers/anthropic/models/{model}:rawPredict`` / ``:streamRawPredict``) the model is in
the URL, not the body.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from p402.instrumentation.formats._types import (
    Endpoint,
    JsonObject,
    Message,
    RequestFacts,
    ResponseFacts,
    Signal,
    StreamAccumulator,
    as_int,
    as_list,
    as_object,
    as_str,
    content_parts,
    text_message,
)
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import Operation

__all__ = ["AnthropicFormat"]

MESSAGES: Final = Endpoint(Operation.CHAT, "messages")
MESSAGES_BY_URL_STREAM: Final = Endpoint(Operation.CHAT, "messages", streams=True)
_FACT_EVENTS: Final = frozenset({"message_start", "message_delta", "message_stop", "error"})
_USAGE_KEYS: Final = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def _usage(raw: JsonObject) -> TokenUsage:
    base = as_int(raw.get("input_tokens"))
    cache_write = as_int(raw.get("cache_creation_input_tokens"))
    cache_read = as_int(raw.get("cache_read_input_tokens"))
    output = as_int(raw.get("output_tokens"))
    thinking = as_int(as_object(raw.get("output_tokens_details")).get("thinking_tokens"))
    measured = base is not None
    total_input = None if base is None else base + (cache_write or 0) + (cache_read or 0)
    return TokenUsage(
        input_tokens=total_input,
        output_tokens=output,
        cache_read_tokens=cache_read if cache_read is not None else (0 if measured else None),
        cache_write_tokens=cache_write if cache_write is not None else (0 if measured else None),
        reasoning_tokens=thinking,
    )


def _model_in_path(path: str) -> str | None:
    """The model named by a Bedrock or Vertex AI URL."""
    if "/model/" in path:
        return unquote(path.split("/model/", 1)[1].split("/", 1)[0]) or None
    if "/models/" in path:
        return unquote(path.split("/models/", 1)[1].split(":", 1)[0]) or None
    return None


class _MessagesStream:
    read_all = None  # its events have names

    def __init__(self, collect_text: bool) -> None:
        self.finished = False
        self._collect = collect_text
        self._model: str | None = None
        self._id: str | None = None
        self._stop: str | None = None
        self._usage: dict[str, Any] = {}
        self._texts: list[str] = []

    def wants(self, name: str | None, data: bytes) -> bool:
        return (
            name is None
            or name in _FACT_EVENTS
            or (self._collect and name == "content_block_delta")
        )

    @property
    def signal(self) -> Signal | None:
        return None  # chosen by event name, which events without one do not have

    def on_event(self, name: str | None, data: JsonObject) -> None:
        kind = as_str(data.get("type")) or name
        if kind == "message_start":
            message = as_object(data.get("message"))
            self._model = as_str(message.get("model"))
            self._id = as_str(message.get("id"))
            self._overwrite(as_object(message.get("usage")))
        elif kind == "message_delta":
            self._stop = as_str(as_object(data.get("delta")).get("stop_reason")) or self._stop
            self._overwrite(as_object(data.get("usage")))
        elif kind == "message_stop":
            self.finished = True
        elif self._collect and kind == "content_block_delta":
            delta = as_object(data.get("delta"))
            if isinstance(text := delta.get("text"), str):
                self._texts.append(text)

    def _overwrite(self, usage: JsonObject) -> None:
        for key in (*_USAGE_KEYS, "output_tokens_details"):
            if usage.get(key) is not None:
                self._usage[key] = usage[key]

    def facts(self) -> ResponseFacts:
        return ResponseFacts(
            model=self._model,
            response_id=self._id,
            finish_reasons=(self._stop,) if self._stop else (),
            usage=_usage(self._usage) if self._usage else TokenUsage(),
        )

    def output_messages(self) -> list[Message]:
        if not self._texts:
            return []
        return [text_message("assistant", ["".join(self._texts)], self._stop)]


class AnthropicFormat:
    """Reads Anthropic Messages exchanges; see the module docstring."""

    def endpoint(self, path: str) -> Endpoint | None:
        if path.endswith("/messages"):
            return MESSAGES
        if path.endswith(("/invoke-with-response-stream", ":streamRawPredict")):
            return MESSAGES_BY_URL_STREAM
        if path.endswith(("/invoke", ":rawPredict")):
            return MESSAGES
        return None

    def request_facts(self, endpoint: Endpoint, path: str, body: JsonObject) -> RequestFacts:
        return RequestFacts(
            model=as_str(body.get("model")) or _model_in_path(path),
            stream=endpoint.streams or body.get("stream") is True,
            max_tokens=as_int(body.get("max_tokens")),
        )

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        usage = as_object(body.get("usage"))
        stop = as_str(body.get("stop_reason"))
        return ResponseFacts(
            model=as_str(body.get("model")),
            response_id=as_str(body.get("id")),
            finish_reasons=(stop,) if stop else (),
            usage=_usage(usage) if usage else TokenUsage(),
        )

    def stream_accumulator(self, endpoint: Endpoint, *, collect_text: bool) -> StreamAccumulator:
        return _MessagesStream(collect_text)

    def input_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        messages: list[Message] = []
        system = body.get("system")
        if system is not None:
            messages.append({"role": "system", "parts": content_parts(system)})
        for message in map(as_object, as_list(body.get("messages"))):
            parts = content_parts(message.get("content"))
            messages.append({"role": str(message.get("role", "user")), "parts": parts})
        return messages

    def output_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        texts = [
            str(block["text"])
            for block in map(as_object, as_list(body.get("content")))
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        ]
        return [text_message("assistant", texts, as_str(body.get("stop_reason")))]
