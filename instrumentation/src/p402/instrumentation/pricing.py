"""The one pricing function: USD cost of a call from its usage, model, provider and time.

Prices come from ``genai-prices`` (bundled data, no network). The instrumentation prices a
call at request time; the receiver prices it again with the same function to keep the
ledger's figure deterministic.

genai-prices re-derives its unit registry on every calculation (about 100 µs). For a model
price without tiers the cost is linear in the five token counts, so the per-token rates are
derived once per model price, from genai-prices itself, by pricing one million tokens of each
kind; a call then costs five exact decimal multiplications. Tiered prices always go through
genai-prices' own calculation. A test holds the two paths equal across the whole price table.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, Final

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from p402.instrumentation.usage import TokenUsage

__all__ = ["NegotiatedRates", "compute_cost", "price_version", "pricing_provider_id"]

_PRICING_PROVIDER_IDS: Final = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "openrouter": "openrouter",
}
_MILLION: Final = 1_000_000


def pricing_provider_id(provider: str) -> str:
    """The genai-prices provider id for a ``gen_ai.provider.name`` value."""
    return _PRICING_PROVIDER_IDS.get(provider, provider)


@cache
def price_version() -> str:
    """The price data in use: the genai-prices release and a digest of its bundled data."""
    data = resources.files("genai_prices").joinpath("data.py").read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"genai-prices {genai_prices.__version__} data-sha256:{digest}"


def _price_usage(usage: TokenUsage) -> genai_prices.Usage:
    counts = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
    }
    return genai_prices.Usage(**{key: value for key, value in counts.items() if value})


def _price_of(model_price: ModelPrice, **counts: int) -> Decimal:
    usage = _price_usage(TokenUsage(**counts))
    return Decimal(model_price.calc_price(usage)["total_price"])


@dataclass(frozen=True, slots=True)
class _LinearRates:
    """USD per token of each kind, for a model price without tiers."""

    fixed: Decimal
    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal

    @classmethod
    def derive(cls, model_price: ModelPrice) -> _LinearRates:
        n = _MILLION
        fixed = _price_of(model_price)
        input_rate = (_price_of(model_price, input_tokens=n) - fixed) / n
        output_rate = (_price_of(model_price, output_tokens=n) - fixed) / n
        return cls(
            fixed=fixed,
            input=input_rate,
            cache_read=(_price_of(model_price, input_tokens=n, cache_read_tokens=n) - fixed) / n
            - input_rate,
            cache_write=(_price_of(model_price, input_tokens=n, cache_write_tokens=n) - fixed) / n
            - input_rate,
            output=output_rate,
            reasoning=(_price_of(model_price, output_tokens=n, reasoning_tokens=n) - fixed) / n
            - output_rate,
        )

    def cost(self, usage: TokenUsage) -> Decimal:
        total = self.fixed  # the kinds of tokens a call did not use add nothing
        if usage.input_tokens:
            total += self.input * usage.input_tokens
        if usage.cache_read_tokens:
            total += self.cache_read * usage.cache_read_tokens
        if usage.cache_write_tokens:
            total += self.cache_write * usage.cache_write_tokens
        if usage.output_tokens:
            total += self.output * usage.output_tokens
        if usage.reasoning_tokens:
            total += self.reasoning * usage.reasoning_tokens
        return total


_rates: dict[int, tuple[ModelPrice, _LinearRates | None]] = {}
_rates_lock = threading.Lock()


def _linear_rates(model_price: ModelPrice) -> _LinearRates | None:
    """The cached rates of ``model_price``; ``None`` when it has tiers (not linear)."""
    cached = _rates.get(id(model_price))
    if cached is not None and cached[0] is model_price:
        return cached[1]
    tiered = any(isinstance(value, TieredPrices) for value in vars(model_price).values())
    rates = None if tiered else _LinearRates.derive(model_price)
    with _rates_lock:
        _rates[id(model_price)] = (model_price, rates)  # holding it keeps the id unique
    return rates


_MAX_MODELS: Final = 1024
_models: dict[tuple[str, str], tuple[object, Any, ModelPrice | None, _LinearRates | None]] = {}


def _price_and_rates(
    model: str, provider_id: str, at: datetime | int
) -> tuple[ModelPrice, _LinearRates | None]:
    """The model's price at ``at`` (a time, or nanoseconds since the epoch) and its linear
    rates (``None`` when tiered)."""
    snapshot = data_snapshot.get_snapshot()
    found = _models.get((model, provider_id))
    if found is None or found[0] is not snapshot:  # price data can be replaced (updates)
        _, model_info = snapshot.find_provider_model(model, None, provider_id, None)
        # One price whatever the time (no conditional prices): found once, rates and all.
        fixed = model_info.prices if isinstance(model_info.prices, ModelPrice) else None
        rates = None if fixed is None else _linear_rates(fixed)
        if len(_models) >= _MAX_MODELS:
            _models.clear()
        found = _models[model, provider_id] = (snapshot, model_info, fixed, rates)
    if found[2] is not None:
        return found[2], found[3]
    if isinstance(at, int):
        at = datetime.fromtimestamp(at / 1e9, tz=UTC)
    model_price = found[1].get_prices(at)
    return model_price, _linear_rates(model_price)


@dataclass(frozen=True, slots=True)
class NegotiatedRates:
    """A tenant's own prices, USD per million tokens; cache rates default to the input rate."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None

    def cost(self, usage: TokenUsage) -> Decimal:
        cache_read = usage.cache_read_tokens or 0
        cache_write = usage.cache_write_tokens or 0
        uncached = (usage.input_tokens or 0) - cache_read - cache_write
        read_rate = self.cache_read_per_mtok
        write_rate = self.cache_write_per_mtok
        per_mtok = (
            self.input_per_mtok * uncached
            + (self.input_per_mtok if read_rate is None else read_rate) * cache_read
            + (self.input_per_mtok if write_rate is None else write_rate) * cache_write
            + self.output_per_mtok * (usage.output_tokens or 0)
        )
        return per_mtok / _MILLION


def compute_cost(
    usage: TokenUsage,
    *,
    model: str,
    provider: str,
    at: datetime | int,
    rates: NegotiatedRates | None = None,
) -> Decimal | None:
    """The cost of ``usage`` on ``model`` at ``at``, or ``None`` when it cannot be priced.

    ``at`` is a time, or nanoseconds since the epoch (made a time only for the models whose
    price depends on it).

    ``rates`` (a tenant's negotiated prices) replace the price data. ``None`` means the model
    or provider is unknown to the price data, or no usage was measured, or the counts are
    inconsistent: such a call is ``unpriced``, never free.
    """
    if not usage.measured or usage.inconsistency() is not None:
        return None
    if rates is not None:
        return rates.cost(usage)
    try:
        model_price, rates_of_model = _price_and_rates(model, pricing_provider_id(provider), at)
    except LookupError:
        return None
    if rates_of_model is None:
        return Decimal(model_price.calc_price(_price_usage(usage))["total_price"])
    return rates_of_model.cost(usage)
