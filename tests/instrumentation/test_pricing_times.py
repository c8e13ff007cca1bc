"""``compute_cost`` takes the call's time as a datetime or as nanoseconds since the epoch:
both price the same, also for models whose price depends on the time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice

from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.usage import TokenUsage

USAGE = TokenUsage(
    input_tokens=1_000, output_tokens=500, cache_read_tokens=100, cache_write_tokens=0
)


def _time_dependent_models() -> list[tuple[str, str]]:
    found = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            if not isinstance(model.prices, ModelPrice):
                found.append((provider.id, model.id))
    return found[:5]


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-5-mini"), ("anthropic", "claude-sonnet-4-5"), *_time_dependent_models()],
)
@pytest.mark.parametrize(
    "moment", [datetime(2024, 3, 1, 12, tzinfo=UTC), datetime(2026, 1, 15, 9, 30, tzinfo=UTC)]
)
def test_nanoseconds_price_as_the_datetime(provider: str, model: str, moment: datetime) -> None:
    at_ns = int(moment.timestamp()) * 1_000_000_000
    assert compute_cost(USAGE, model=model, provider=provider, at=at_ns) == compute_cost(
        USAGE, model=model, provider=provider, at=moment
    )
