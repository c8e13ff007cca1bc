"""The OpenAI wire format: chat completions, responses, completions and embeddings.

Also spoken by Azure OpenAI, OpenRouter, Bedrock's OpenAI-compatible endpoint and any
OpenAI-compatible gateway. Usage conventions: chat ``prompt_tokens`` already includes
``prompt_tokens_details.cached_tokens`` and ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``; the Responses API names them
``input_tokens`` / ``output_tokens`` with the same inclusions. OpenAI bills no cache writes,
so a reported usage has ``cache_write_tokens`` 0 unless a gateway reports them.
OpenRouter adds the billed USD amount as ``usage.cost``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from p402.instrumentation.formats._types import (
    Endpoint,
    JsonObject,
    RequestFacts,
    ResponseFacts,
    as_int,
    as_object,
    as_str,
)
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import Operation

__all__ = ["OpenAIFormat"]

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


def _usage(endpoint: Endpoint, usage: JsonObject) -> TokenUsage:
    if endpoint is RESPONSES:
        input_details = as_object(usage.get("input_tokens_details"))
        output_details = as_object(usage.get("output_tokens_details"))
        input_tokens = as_int(usage.get("input_tokens"))
        output_tokens = as_int(usage.get("output_tokens"))
    else:
        input_details = as_object(usage.get("prompt_tokens_details"))
        output_details = as_object(usage.get("completion_tokens_details"))
        input_tokens = as_int(usage.get("prompt_tokens"))
        output_tokens = as_int(usage.get("completion_tokens"))
    if endpoint is EMBEDDINGS:
        return TokenUsage(input_tokens=input_tokens)
    measured = input_tokens is not None
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=as_int(input_details.get("cached_tokens")) or (0 if measured else None),
        cache_write_tokens=as_int(input_details.get("cache_write_tokens"))
        or (0 if measured else None),
        reasoning_tokens=as_int(output_details.get("reasoning_tokens"))
        or (0 if output_tokens is not None else None),
    )


def _provider_cost(usage: JsonObject) -> Decimal | None:
    cost = usage.get("cost")
    if isinstance(cost, bool) or not isinstance(cost, Decimal | int):
        return None
    return Decimal(cost)


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
        return RequestFacts(
            model=as_str(body.get("model")),
            stream=body.get("stream") is True,
            max_tokens=as_int(limit),
        )

    def response_facts(self, endpoint: Endpoint, body: JsonObject) -> ResponseFacts:
        finish_reasons: tuple[str, ...]
        if endpoint is RESPONSES:
            finish = _responses_finish_reason(body)
            finish_reasons = (finish,) if finish else ()
        else:
            finish_reasons = tuple(
                reason
                for choice in body.get("choices") or ()
                if (reason := as_str(as_object(choice).get("finish_reason")))
            )
        usage = as_object(body.get("usage"))
        return ResponseFacts(
            model=as_str(body.get("model")),
            response_id=as_str(body.get("id")),
            finish_reasons=finish_reasons,
            usage=_usage(endpoint, usage) if usage else TokenUsage(),
            provider_cost=_provider_cost(usage),
        )


def _responses_finish_reason(body: JsonObject) -> str | None:
    status = as_str(body.get("status"))
    if status == "completed":
        return "stop"
    if status == "incomplete":
        reason = as_str(as_object(body.get("incomplete_details")).get("reason"))
        return "length" if reason == "max_output_tokens" else reason or status
    return status
