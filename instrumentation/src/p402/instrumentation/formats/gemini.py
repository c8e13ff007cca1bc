"""The Gemini format: ``generateContent`` and ``streamGenerateContent``, on the Gemini API
(``/v1/models/{model}:…``, also ``v1beta``) and on Vertex AI
(``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:…``).

The model is named only in the URL. Usage conventions: ``promptTokenCount`` already includes
``cachedContentTokenCount``; ``candidatesTokenCount`` EXCLUDES ``thoughtsTokenCount``, so the
total output is their sum. Streams (``alt=sse``: CRLF-framed SSE with no ``[DONE]``; without
it: one JSON array) repeat the cumulative usage on every chunk: the last one is the total.
"""

from __future__ import annotations

from typing import Final
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

__all__ = ["GeminiFormat"]

GENERATE: Final = Endpoint(Operation.GENERATE_CONTENT, "generate_content")
STREAM_GENERATE: Final = Endpoint(Operation.GENERATE_CONTENT, "generate_content", streams=True)
_FINISH_SIGNAL: Final = Signal("finishReason", non_null=False)


def _usage(raw: JsonObject) -> TokenUsage:
    prompt = as_int(raw.get("promptTokenCount"))
    candidates = as_int(raw.get("candidatesTokenCount"))
    thoughts = as_int(raw.get("thoughtsTokenCount"))
    cached = as_int(raw.get("cachedContentTokenCount"))
    output = (
        None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    )
    return TokenUsage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=cached if cached is not None else (0 if prompt is not None else None),
        reasoning_tokens=thoughts if thoughts is not None else (0 if output is not None else None),
    )


def _finish_reasons(body: JsonObject) -> tuple[str, ...]:
    return tuple(
        reason.lower()
        for candidate in map(as_object, as_list(body.get("candidates")))
        if (reason := as_str(candidate.get("finishReason")))
    )


def _texts(candidate: JsonObject) -> list[str]:
    return [
        str(part["text"])
        for part in map(as_object, as_list(as_object(candidate.get("content")).get("parts")))
        if isinstance(part.get("text"), str) and not part.get("thought")
    ]


class _GenerateStream:
    read_all = None  # its first and finishing chunks suffice: see wants

    def __init__(self, collect_text: bool) -> None:
        self.finished = False
        self._collect = collect_text
        self._facts = ResponseFacts()
        self._texts: list[str] = []

    def wants(self, name: str | None, data: bytes) -> bool:
        # Usage is cumulative on every chunk: the first and the finishing ones suffice (the
        # reader also reads the last chunk it skipped, when the stream ends).
        return self._collect or self._facts.response_id is None or _FINISH_SIGNAL.search(data)

    @property
    def signal(self) -> Signal | None:
        return None if self._collect or self._facts.response_id is None else _FINISH_SIGNAL

    def on_event(self, name: str | None, data: JsonObject) -> None:
        facts = GeminiFormat().response_facts(STREAM_GENERATE, data)
        self._facts = ResponseFacts(
            model=facts.model or self._facts.model,
            response_id=facts.response_id or self._facts.response_id,
            finish_reasons=facts.finish_reasons or self._facts.finish_reasons,
            usage=facts.usage if facts.usage.measured else self._facts.usage,
        )
        if facts.finish_reasons:
            self.finished = True
        if self._collect:
            for candidate in map(as_object, as_list(data.get("candidates"))):
                self._texts.extend(_texts(candidate))

    def facts(self) -> ResponseFacts:
        return self._facts

    def output_messages(self) -> list[Message]:
        if not self._texts:
            return []
        finish = self._facts.finish_reasons[0] if self._facts.finish_reasons else None
        return [text_message("assistant", ["".join(self._texts)], finish)]


class GeminiFormat:
    """Reads Gemini exchanges; see the module docstring."""

    def endpoint(self, path: str) -> Endpoint | None:
        if path.endswith(":generateContent"):
            return GENERATE
        if path.endswith(":streamGenerateContent"):
            return STREAM_GENERATE
        return None

    def request_facts(self, endpoint: Endpoint, path: str, body: JsonObject) -> RequestFacts:
        model = (
            unquote(path.rsplit("/models/", 1)[-1].split(":", 1)[0]) if "/models/" in path else None
        )
        config = as_object(body.get("generationConfig") or body.get("generation_config"))
        return RequestFacts(
            model=model or None,
            stream=endpoint.streams,
            max_tokens=as_int(config.get("maxOutputTokens")),
        )

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        usage = as_object(body.get("usageMetadata"))
        return ResponseFacts(
            model=as_str(body.get("modelVersion")),
            response_id=as_str(body.get("responseId")),
            finish_reasons=_finish_reasons(body),
            usage=_usage(usage) if usage else TokenUsage(),
        )

    def stream_accumulator(self, endpoint: Endpoint, *, collect_text: bool) -> StreamAccumulator:
        return _GenerateStream(collect_text)

    def input_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        messages: list[Message] = []
        system = as_object(body.get("systemInstruction") or body.get("system_instruction"))
        if system:
            messages.append({"role": "system", "parts": content_parts(system.get("parts"))})
        for content in map(as_object, as_list(body.get("contents"))):
            parts = content_parts(content.get("parts"))
            messages.append({"role": str(content.get("role", "user")), "parts": parts})
        return messages

    def output_messages(self, endpoint: Endpoint, body: JsonObject) -> list[Message]:
        return [
            text_message(
                "assistant",
                _texts(candidate),
                (as_str(candidate.get("finishReason")) or "").lower() or None,
            )
            for candidate in map(as_object, as_list(body.get("candidates")))
        ]
