"""The one pricing function: USD cost of a call from its usage, model, provider and time.

Prices come from ``genai-prices`` (bundled data, no network). The instrumentation prices a
call at request time; the receiver prices it again with the same function to keep the
ledger's figure deterministic.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Final

import genai_prices

from p402.instrumentation.usage import TokenUsage

__all__ = ["compute_cost", "price_version", "pricing_provider_id"]

_PRICING_PROVIDER_IDS: Final = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "openrouter": "openrouter",
}


def pricing_provider_id(provider: str) -> str:
    """The genai-prices provider id for a ``gen_ai.provider.name`` value."""
    return _PRICING_PROVIDER_IDS.get(provider, provider)


@cache
def price_version() -> str:
    """The price data in use: the genai-prices release and a digest of its bundled data."""
    data = resources.files("genai_prices").joinpath("data.py").read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"genai-prices {genai_prices.__version__} data-sha256:{digest}"


def compute_cost(usage: TokenUsage, *, model: str, provider: str, at: datetime) -> Decimal | None:
    """The cost of ``usage`` on ``model`` at ``at``, or ``None`` when it cannot be priced.

    ``None`` means the model or provider is unknown to the price data, or no usage was
    measured: such a call is ``unpriced``, never free.
    """
    if not usage.measured:
        return None
    counts = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
    }
    try:
        calculation = genai_prices.calc_price(
            genai_prices.Usage(**{key: value for key, value in counts.items() if value}),
            model,
            provider_id=pricing_provider_id(provider),
            genai_request_timestamp=at,
        )
    except LookupError:
        return None
    return Decimal(calculation.total_price)
