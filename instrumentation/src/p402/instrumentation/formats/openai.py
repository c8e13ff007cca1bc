"""The OpenAI wire format: chat completions, responses, completions and embeddings.

Also spoken by Azure OpenAI, OpenRouter, Bedrock's OpenAI-compatible endpoint and any
OpenAI-compatible gateway. Usage conventions: chat ``prompt_tokens`` already includes
``prompt_tokens_details.cached_tokens`` and ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``; the Responses API names them
``input_tokens`` / ``output_tokens`` with the same inclusions. OpenAI bills no cache writes,
so a reported usage has ``cache_write_tokens`` 0 unless a gateway reports them.
OpenRouter adds the billed USD amount as ``usage.cost``.

Streams: chat completion chunks carry usage only in a last chunk with ``choices: []``, and
only when the request asked for ``stream_options.include_usage``; the Responses API sends
the whole response, usage included, in ``response.completed`` / ``.incomplete`` / ``.failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import msgspec

from p402.instrumentation._json import load_json
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

__all__ = ["CHAT_COMPLETIONS", "OpenAIFormat", "is_usage_only_chunk"]

CHAT_COMPLETIONS: Final = Endpoint(Operation.CHAT, "chat_completions")
RESPONSES: Final = Endpoint(Operation.CHAT, "responses")
COMPLETIONS: Final = Endpoint(Operation.TEXT_COMPLETION, "completions")
EMBEDDINGS: Final = Endpoint(Operation.EMBEDDINGS, "embeddings")

_BY_SUFFIX: Final = (
    ("/chat/completions", CHAT_COMPLETIONS),
    ("/responses", RESPONSES),
    ("/completions", COMPLETIONS),
    ("/embeddings", EMBEDDINGS),
)
_RESPONSE_DONE_EVENTS: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)


def _usage(endpoint: Endpoint, usage: JsonObject) -> TokenUsage:
    # The as_* readers inline for the usual types (a hot path: once per event).
    if endpoint is RESPONSES:
        input_details = usage.get("input_tokens_details")
        output_details = usage.get("output_tokens_details")
        input_tokens = usage.get("input_tokens")
        output_tokens = usage.get("output_tokens")
    else:
        input_details = usage.get("prompt_tokens_details")
        output_details = usage.get("completion_tokens_details")
        input_tokens = usage.get("prompt_tokens")
        output_tokens = usage.get("completion_tokens")
    if type(input_tokens) is not int:
        input_tokens = as_int(input_tokens)
    if endpoint is EMBEDDINGS:
        return TokenUsage(input_tokens=input_tokens)
    if type(output_tokens) is not int:
        output_tokens = as_int(output_tokens)
    if type(input_details) is not dict:
        input_details = as_object(input_details)
    if type(output_details) is not dict:
        output_details = as_object(output_details)
    cache_read = input_details.get("cached_tokens")
    cache_write = input_details.get("cache_write_tokens")
    reasoning = output_details.get("reasoning_tokens")
    measured = input_tokens is not None
    # By position (input, output, cache read, cache write, reasoning): a class called with
    # keywords gets them as a dict first.
    return TokenUsage(
        input_tokens,
        output_tokens,
        (cache_read if type(cache_read) is int else as_int(cache_read))
        or (0 if measured else None),
        (cache_write if type(cache_write) is int else as_int(cache_write))
        or (0 if measured else None),
        (reasoning if type(reasoning) is int else as_int(reasoning))
        or (0 if output_tokens is not None else None),
    )


def _provider_cost(usage: JsonObject) -> Decimal | None:
    cost = usage.get("cost")
    if isinstance(cost, bool) or not isinstance(cost, (Decimal, int)):
        return None
    return Decimal(cost)


def _responses_finish_reason(body: JsonObject) -> str | None:
    status = as_str(body.get("status"))
    if status == "completed":
        return "stop"
    if status == "incomplete":
        reason = as_str(as_object(body.get("incomplete_details")).get("reason"))
        return "length" if reason == "max_output_tokens" else reason or status
    return status


def _choice_finish_reasons(body: JsonObject) -> tuple[str, ...]:
    reasons = []
    for choice in as_list(body.get("choices")):
        reason = (choice if type(choice) is dict else as_object(choice)).get("finish_reason")
        if (type(reason) is str and reason) or (reason := as_str(reason)):
            reasons.append(reason)
    return tuple(reasons)


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """What :class:`_ChatStream` reads of a chat completion chunk, typed: the rest is skipped."""

    model: str | None = None
    id: str | None = None
    choices: list[_ChunkChoice] | None = None
    usage: dict[str, Any] | None = None


_CHUNKS: Final = msgspec.json.Decoder(list[_Chunk], float_hook=Decimal)

_CHAT_SIGNAL: Final = Signal("usage", "finish_reason", non_null=True)
"""What a chat chunk may carry besides the model and id that every chunk repeats."""


def is_usage_only_chunk(data: JsonObject) -> bool:
    """The final chat chunk that ``stream_options.include_usage`` adds: no choices, usage."""
    return data.get("choices") == [] and isinstance(data.get("usage"), dict)


class _ChatStream:
    """Chat completion chunks: model and id on every chunk, usage on the last one.

    Content chunks repeat model and id and carry ``"usage":null, "finish_reason":null``: only
    the chunks with a finish reason or usage are decoded. The first chunk is kept undecoded,
    and read at the end only if no later chunk named the model or the id (a later chunk's
    values would have replaced the first one's anyway).
    """

    def __init__(self, collect_text: bool) -> None:
        self.finished = False
        self._collect = collect_text
        self._model: str | None = None
        self._id: str | None = None
        self._finish: dict[int, str] = {}
        self._usage: JsonObject = {}
        self._texts: dict[int, list[str]] = {}
        self._started = False
        self._first: bytes | None = None

    def wants(self, name: str | None, data: bytes) -> bool:
        if self._collect or _CHAT_SIGNAL.find(data) is not None:
            self._started = True
            return True
        if not self._started:
            self._started = True
            self._first = data
        return False

    @property
    def signal(self) -> Signal | None:
        return _CHAT_SIGNAL if self._started and not self._collect else None

    @property
    def read_all(self) -> Callable[[bytes], bool] | None:
        return None if self._collect else self._read_all  # text: event by event

    def _read_all(self, events: bytes) -> bool:
        try:
            chunks = _CHUNKS.decode(events)
        except msgspec.MsgspecError:  # not JSON, or values of other types: event by event
            return False
        self._started = True
        model, response_id, finish, usage = self._model, self._id, self._finish, self._usage
        for chunk in chunks:  # :meth:`on_event` of each, on typed chunks
            model = chunk.model or model
            response_id = chunk.id or response_id
            for choice in chunk.choices or ():
                if choice.finish_reason:
                    finish[choice.index] = choice.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
        self._model, self._id, self._usage = model, response_id, usage
        return True

    def on_event(self, name: str | None, data: JsonObject) -> None:
        self._model = as_str(data.get("model")) or self._model
        self._id = as_str(data.get("id")) or self._id
        for choice in as_list(data.get("choices")):
            choice = as_object(choice)
            index = as_int(choice.get("index")) or 0
            if reason := as_str(choice.get("finish_reason")):
                self._finish[index] = reason
            if self._collect:
                delta = as_object(choice.get("delta"))
                text = delta.get("content") or as_object(choice).get("text")
                if isinstance(text, str) and text:
                    self._texts.setdefault(index, []).append(text)
        if isinstance(usage := data.get("usage"), dict):
            self._usage = usage

    def facts(self) -> ResponseFacts:
        if (self._model is None or self._id is None) and self._first is not None:
            first, self._first = load_json(self._first), None
            if first is not None:
                self._model = self._model or as_str(first.get("model"))
                self._id = self._id or as_str(first.get("id"))
        return ResponseFacts(  # model, response id, finish reasons, usage, provider cost
            self._model,
            self._id,
            tuple(map(self._finish.__getitem__, sorted(self._finish))),
            _usage(CHAT_COMPLETIONS, self._usage) if self._usage else TokenUsage(),
            _provider_cost(self._usage),
        )

    def output_messages(self) -> list[Message]:
        return [
            text_message("assistant", ["".join(self._texts[i])], self._finish.get(i))
            for i in sorted(self._texts)
        ]


class _ResponsesStream:
    """Responses API events: the final ``response.*`` event carries the whole response."""

    read_all = None  # its events have names

    def __init__(self, collect_text: bool) -> None:
        self.finished = False
        self._collect = collect_text
        self._response: JsonObject = {}
        self._texts: list[str] = []

    def wants(self, name: str | None, data: bytes) -> bool:
        return (
            name is None
            or name in _RESPONSE_DONE_EVENTS
            or name == "response.created"
            or (self._collect and name == "response.output_text.delta")
        )

    @property
    def signal(self) -> Signal | None:
        return None  # chosen by event name, which events without one do not have

    def on_event(self, name: str | None, data: JsonObject) -> None:
        kind = name or as_str(data.get("type"))
        if isinstance(response := data.get("response"), dict):
            self._response = response
        if kind in _RESPONSE_DONE_EVENTS:
            self.finished = True
        elif (
            self._collect
            and kind == "response.output_text.delta"
            and isinstance(delta := data.get("delta"), str)
        ):
            self._texts.append(delta)

    def facts(self) -> ResponseFacts:
        return OpenAIFormat().response_facts(RESPONSES, self._response)

    def output_messages(self) -> list[Message]:
        if self.finished:
            return OpenAIFormat().output_messages(RESPONSES, self._response)
        return [text_message("assistant", ["".join(self._texts)])] if self._texts else []


class OpenAIFormat:
    """Reads OpenAI-format exchanges; see the module docstring."""

    def endpoint(self, path: str) -> Endpoint | None:
        for suffix, endpoint in _BY_SUFFIX:
            if path.endswith(suffix):
                return endpoint
        return None

    def request_facts(self, endpoint: Endpoint, path: str, body: JsonObject) -> RequestFacts:
        limit = body.get("max_output_tokens") if endpoint is RESPONSES else None
        if limit is None:
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
        model = body.get("model")
        return RequestFacts(  # model, stream, max tokens
            model if type(model) is str and model else as_str(model),
            body.get("stream") is True,
            limit if type(limit) is int else as_int(limit),
        )

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        finish_reasons: tuple[str, ...]
        if endpoint is RESPONSES:
            finish = _responses_finish_reason(body)
            finish_reasons = (finish,) if finish else ()
        else:
            finish_reasons = _choice_finish_reasons(body)
        usage = body.get("usage")
        if type(usage) is not dict:
            usage = as_object(usage)
        model = body.get("model")
        response_id = body.get("id")
        return ResponseFacts(  # model, response id, finish reasons, usage, provider cost
            model if type(model) is str and model else as_str(model),
            response_id if type(response_id) is str and response_id else as_str(response_id),
            finish_reasons,
            _usage(endpoint, usage) if usage else TokenUsage(),
            _provider_cost(usage),
        )

    def stream_accumulator(self, endpoint: Endpoint, *, collect_text: bool) -> StreamAccumulator:
        if endpoint is RESPONSES:
            return _ResponsesStream(collect_text)
        return _ChatStream(collect_text)

    def input_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        messages: list[Message] = []
        if endpoint is RESPONSES:
            if isinstance(instructions := body.get("instructions"), str):
                messages.append(text_message("system", [instructions]))
            items: Any = body.get("input")
            if isinstance(items, str):
                return [*messages, text_message("user", [items])]
            for item in as_list(items):
                item = as_object(item)
                if "role" in item:
                    parts = content_parts(item.get("content"))
                    messages.append({"role": str(item["role"]), "parts": parts})
            return messages
        if endpoint is EMBEDDINGS or endpoint is COMPLETIONS:
            key = "input" if endpoint is EMBEDDINGS else "prompt"
            raw = body.get(key)
            texts = (
                [raw] if isinstance(raw, str) else [t for t in as_list(raw) if isinstance(t, str)]
            )
            return [text_message("user", texts)] if texts else []
        for message in as_list(body.get("messages")):
            message = as_object(message)
            parts = content_parts(message.get("content"))
            messages.append({"role": str(message.get("role", "user")), "parts": parts})
        return messages

    def output_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        if endpoint is EMBEDDINGS:
            return []
        if endpoint is RESPONSES:
            texts = [
                str(part.get("text"))
                for item in as_list(body.get("output"))
                if as_object(item).get("type") == "message"
                for part in map(as_object, as_list(as_object(item).get("content")))
                if isinstance(part.get("text"), str)
            ]
            return [text_message("assistant", texts, _responses_finish_reason(body))]
        messages = []
        for choice in map(as_object, as_list(body.get("choices"))):
            message = as_object(choice.get("message"))
            text = message.get("content") if message else choice.get("text")
            texts = [text] if isinstance(text, str) else []
            messages.append(text_message("assistant", texts, as_str(choice.get("finish_reason"))))
        return messages
