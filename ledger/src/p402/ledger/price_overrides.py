"""Negotiated rates: a tenant's own prices for some models, which the receiver uses instead of
the public price data while they are in force."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

from sqlalchemy import Engine, insert, select

from p402.instrumentation.money import parse_usd
from p402.instrumentation.pricing import NegotiatedRates
from p402.ledger.models import PriceOverride

__all__ = ["RateOverride", "add_price_override", "price_overrides", "rates_for"]

_OVERRIDES = PriceOverride.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RateOverride:
    id: int
    provider: str | None
    model: str
    rates: NegotiatedRates
    valid_from_ms: int | None
    valid_to_ms: int | None

    def applies(self, provider: str | None, model: str, ts_ms: int) -> bool:
        return (
            (self.provider is None or self.provider == provider)
            and fnmatchcase(model, self.model)
            and (self.valid_from_ms is None or ts_ms >= self.valid_from_ms)
            and (self.valid_to_ms is None or ts_ms < self.valid_to_ms)
        )

    @property
    def price_version(self) -> str:
        return f"tenant-rates {self.id}"


def _amount(value: str | None) -> Decimal | None:
    return None if value is None else parse_usd(value)


def price_overrides(engine: Engine, tenant_id: int) -> tuple[RateOverride, ...]:
    """The tenant's overrides, most recently added first (the first that applies wins)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(_OVERRIDES)
            .where(_OVERRIDES.c.tenant_id == tenant_id)
            .order_by(_OVERRIDES.c.id.desc())
        ).mappings()
        return tuple(
            RateOverride(
                id=row["id"],
                provider=row["provider"],
                model=row["model"],
                rates=NegotiatedRates(
                    input_per_mtok=parse_usd(row["input_per_mtok"]),
                    output_per_mtok=parse_usd(row["output_per_mtok"]),
                    cache_read_per_mtok=_amount(row["cache_read_per_mtok"]),
                    cache_write_per_mtok=_amount(row["cache_write_per_mtok"]),
                ),
                valid_from_ms=row["valid_from_ms"],
                valid_to_ms=row["valid_to_ms"],
            )
            for row in rows
        )


def rates_for(
    overrides: Sequence[RateOverride], provider: str | None, model: str, ts_ms: int
) -> RateOverride | None:
    return next((o for o in overrides if o.applies(provider, model, ts_ms)), None)


def add_price_override(
    engine: Engine,
    tenant_id: int,
    *,
    model: str,
    input_per_mtok: str,
    output_per_mtok: str,
    provider: str | None = None,
    cache_read_per_mtok: str | None = None,
    cache_write_per_mtok: str | None = None,
    valid_from_ms: int | None = None,
    valid_to_ms: int | None = None,
) -> int:
    """Record negotiated rates; amounts are decimal strings (validated)."""
    for amount in (input_per_mtok, output_per_mtok, cache_read_per_mtok, cache_write_per_mtok):
        if amount is not None:
            parse_usd(amount)
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(_OVERRIDES)
                .values(
                    tenant_id=tenant_id,
                    provider=provider,
                    model=model,
                    input_per_mtok=input_per_mtok,
                    output_per_mtok=output_per_mtok,
                    cache_read_per_mtok=cache_read_per_mtok,
                    cache_write_per_mtok=cache_write_per_mtok,
                    valid_from_ms=valid_from_ms,
                    valid_to_ms=valid_to_ms,
                )
                .returning(_OVERRIDES.c.id)
            ).scalar_one()
        )
