"""The ledger's cost of an event: the one place that decides which prices apply.

A tenant's negotiated rates where one is in force, else the public price data
(:func:`p402.instrumentation.pricing.compute_cost`). Used by the receiver at ingest and by
re-rating.
"""

from __future__ import annotations

from collections.abc import Sequence

from p402.instrumentation.money import to_picos
from p402.instrumentation.pricing import compute_cost, price_version
from p402.instrumentation.usage import TokenUsage
from p402.ledger.price_overrides import RateOverride, rates_for

__all__ = ["ledger_cost"]


def ledger_cost(
    usage: TokenUsage,
    *,
    model: str | None,
    provider: str | None,
    ts_ms: int,
    overrides: Sequence[RateOverride] = (),
) -> tuple[int | None, str | None]:
    """Picodollars and the price version used, or ``(None, None)`` when it cannot be priced."""
    if not model:
        return None, None
    override = rates_for(overrides, provider, model, ts_ms)
    cost = compute_cost(
        usage,
        model=model,
        provider=provider or "",
        at=ts_ms * 1_000_000,  # a time is made only for the prices that depend on it
        rates=override.rates if override else None,
    )
    if cost is None:
        return None, None
    return to_picos(cost), override.price_version if override else price_version()
