"""One parser per provider wire format; :data:`FORMATS` finds the one for a route."""

from __future__ import annotations

from typing import Final

from p402.instrumentation.formats._types import (
    Endpoint,
    ExchangeFormat,
    RequestFacts,
    ResponseFacts,
)
from p402.instrumentation.formats.openai import OpenAIFormat
from p402.instrumentation.vocabulary import ApiFormat

__all__ = ["FORMATS", "Endpoint", "ExchangeFormat", "RequestFacts", "ResponseFacts"]

FORMATS: Final[dict[ApiFormat, ExchangeFormat]] = {
    ApiFormat.OPENAI: OpenAIFormat(),
}
