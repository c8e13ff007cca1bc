"""Exact money and the one pricing function, against the fixture manifest."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from p402.instrumentation.money import from_picos, parse_usd, to_picos, usd_str
from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.testing import manifest
from p402.instrumentation.usage import TokenUsage

PRICED_AT = datetime(2026, 11, 20, tzinfo=UTC)


def test_picodollars_round_trip_exactly():
    for text in ("0.0005331", "1.6E-7", "0.00171052", "123456.000000000001"):
        amount = Decimal(text)
        assert from_picos(to_picos(amount)) == amount
    assert usd_str(Decimal("1.6E-7")) == "0.00000016"
    assert usd_str(from_picos(0)) == "0"


def test_amounts_are_never_read_from_binary_floats():
    with pytest.raises(ValueError, match="decimal string"):
        parse_usd(0.1)
    with pytest.raises(ValueError, match="not a decimal amount"):
        parse_usd("ten dollars")
    assert parse_usd("0.000762") == Decimal("0.000762")


@pytest.mark.parametrize(
    ("fixture", "model", "provider"),
    [
        ("openai_chat.json", "gpt-5-mini-2025-08-07", "openai"),
        ("openai_responses.json", "gpt-5-mini-2025-08-07", "openai"),
        ("openai_embeddings.json", "text-embedding-3-small", "openai"),
        ("anthropic_messages.json", "claude-sonnet-4-5-20250929", "anthropic"),
        ("gemini_generate.json", "gemini-2.5-flash", "gcp.gemini"),
    ],
)
def test_compute_cost_matches_the_manifest(fixture, model, provider):
    expect = manifest()[fixture]["expect"]
    usage = TokenUsage(
        input_tokens=expect["gen_ai.usage.input_tokens"],
        output_tokens=expect.get("gen_ai.usage.output_tokens"),
        cache_read_tokens=expect.get("gen_ai.usage.cache_read.input_tokens"),
        cache_write_tokens=expect.get("gen_ai.usage.cache_write.input_tokens"),
        reasoning_tokens=expect.get("gen_ai.usage.reasoning.output_tokens"),
    )
    cost = compute_cost(usage, model=model, provider=provider, at=PRICED_AT)
    assert cost == Decimal(expect["expected_usd"])


def test_unmeasured_usage_or_unknown_model_has_no_cost():
    assert compute_cost(TokenUsage(), model="gpt-5-mini", provider="openai", at=PRICED_AT) is None
    usage = TokenUsage(input_tokens=10, output_tokens=1)
    assert compute_cost(usage, model="no-such-model-x", provider="openai", at=PRICED_AT) is None


def test_the_fast_linear_path_equals_genai_prices_across_the_price_table():
    import random

    from genai_prices import data_snapshot
    from genai_prices.types import ModelPrice

    from p402.instrumentation.pricing import _linear_rates, _price_usage

    rng = random.Random(402)
    checked = tiered = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.prices
            variants = [prices] if isinstance(prices, ModelPrice) else [p.prices for p in prices]
            for model_price in variants:
                rates = _linear_rates(model_price)
                if rates is None:
                    tiered += 1
                    continue
                for _ in range(3):
                    input_tokens = rng.randint(0, 300_000)
                    cache_read = rng.randint(0, input_tokens)
                    cache_write = rng.randint(0, input_tokens - cache_read)
                    output = rng.randint(0, 50_000)
                    usage = TokenUsage(
                        input_tokens, output, cache_read, cache_write, rng.randint(0, output)
                    )
                    expected = model_price.calc_price(_price_usage(usage))["total_price"]
                    assert rates.cost(usage) == expected, (provider.id, model.id, usage)
                checked += 1
    assert checked > 1000
    assert tiered > 0
