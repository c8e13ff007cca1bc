"""One parser per provider wire format; :data:`FORMATS` finds the one for a route."""

from __future__ import annotations

from typing import Final

from p402.instrumentation.formats._types import (
    Endpoint,
    ExchangeFormat,
    Message,
    RequestFacts,
    ResponseFacts,
    Signal,
    StreamAccumulator,
)
from p402.instrumentation.formats.anthropic import AnthropicFormat
from p402.instrumentation.formats.gemini import GeminiFormat
from p402.instrumentation.formats.openai import OpenAIFormat
from p402.instrumentation.vocabulary import ApiFormat

__all__ = [
    "FORMATS",
    "Endpoint",
    "ExchangeFormat",
    "Message",
    "RequestFacts",
    "ResponseFacts",
    "Signal",
    "StreamAccumulator",
]

FORMATS: Final[dict[ApiFormat, ExchangeFormat]] = {
    ApiFormat.OPENAI: OpenAIFormat(),
    ApiFormat.ANTHROPIC: AnthropicFormat(),
    ApiFormat.GEMINI: GeminiFormat(),
}
