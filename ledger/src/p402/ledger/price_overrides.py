"""Negotiated rates: a tenant's own prices for some models, which the receiver uses instead of
the public price data while they are in force."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any, Final

from sqlalchemy import Connection, Engine, RowMapping, bindparam, delete, insert, select

from p402.instrumentation.money import parse_usd, usd_str
from p402.instrumentation.pricing import NegotiatedRates
from p402.ledger.clock import from_iso, to_iso
from p402.ledger.locks import Locked, lock_tenant
from p402.ledger.models import PriceOverride

__all__ = [
    "MAX_PRICE_OVERRIDES",
    "PRICE_OVERRIDES_OF",
    "InvalidPriceOverride",
    "PriceOverrideSpec",
    "RateOverride",
    "add_price_override",
    "list_price_overrides",
    "price_overrides",
    "rate_override",
    "rates_for",
    "read_price_overrides",
    "replace_price_overrides",
]

MAX_PRICE_OVERRIDES: Final = 500

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


PRICE_OVERRIDES_OF: Final = (
    select(_OVERRIDES)
    .where(_OVERRIDES.c.tenant_id == bindparam("tenant"))
    .order_by(_OVERRIDES.c.id.desc())
)
"""The rows of tenant ``tenant``'s overrides, most recently added first."""


def rate_override(row: Mapping[Any, Any]) -> RateOverride:
    """One row of :data:`PRICE_OVERRIDES_OF`."""
    return RateOverride(
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


def price_overrides(engine: Engine, tenant_id: int) -> tuple[RateOverride, ...]:
    """The tenant's overrides, most recently added first (the first that applies wins)."""
    with engine.connect() as connection:
        rows = connection.execute(PRICE_OVERRIDES_OF, {"tenant": tenant_id}).mappings()
        return tuple(rate_override(row) for row in rows)


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


# --- the tenant's whole set, as settings ---------------------------------------------------


class InvalidPriceOverride(ValueError):
    """Negotiated rates that cannot be stored, with the reason."""


@dataclass(frozen=True, slots=True)
class PriceOverrideSpec:
    """Negotiated rates as written: amounts are normalised decimal strings (USD per million
    tokens), the validity an optional ``[from, to)`` in epoch ms."""

    model: str
    input_per_mtok: str
    output_per_mtok: str
    provider: str | None = None
    cache_read_per_mtok: str | None = None
    cache_write_per_mtok: str | None = None
    valid_from_ms: int | None = None
    valid_to_ms: int | None = None


_SPEC_FIELDS: Final = frozenset(
    {
        "model",
        "provider",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
        "valid_from",
        "valid_to",
    }
)


def _text(item: Mapping[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidPriceOverride(f"{name} must be a string of 1 to {limit} characters")
    return value


def _rate(item: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    try:
        amount = parse_usd(value)
    except ValueError as error:
        raise InvalidPriceOverride(f"{name}: {error}") from None
    if amount < 0:
        raise InvalidPriceOverride(f"{name} must not be negative")
    shown = usd_str(amount)
    if len(shown) > 40:
        raise InvalidPriceOverride(f"{name} has too many digits")
    return shown


def _moment(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPriceOverride(f"{name} must be an ISO-8601 date or time")
    try:
        return from_iso(value)
    except ValueError as error:
        raise InvalidPriceOverride(f"{name}: {error}") from None


def _spec(item: object) -> PriceOverrideSpec:
    if not isinstance(item, Mapping):
        raise InvalidPriceOverride("a price override must be a JSON object")
    if unknown := set(item) - _SPEC_FIELDS:
        raise InvalidPriceOverride(f"unknown field(s) {', '.join(sorted(unknown))}")
    spec = PriceOverrideSpec(
        model=_text(item, "model", 200, required=True) or "",
        provider=_text(item, "provider", 64, required=False),
        input_per_mtok=_rate(item, "input_per_mtok", required=True) or "",
        output_per_mtok=_rate(item, "output_per_mtok", required=True) or "",
        cache_read_per_mtok=_rate(item, "cache_read_per_mtok", required=False),
        cache_write_per_mtok=_rate(item, "cache_write_per_mtok", required=False),
        valid_from_ms=_moment(item, "valid_from"),
        valid_to_ms=_moment(item, "valid_to"),
    )
    if (
        spec.valid_from_ms is not None
        and spec.valid_to_ms is not None
        and spec.valid_from_ms >= spec.valid_to_ms
    ):
        raise InvalidPriceOverride("valid_from must be before valid_to")
    return spec


def read_price_overrides(document: object) -> list[PriceOverrideSpec]:
    """A tenant's whole set of negotiated rates from JSON: a list of ``{model, provider?,
    input_per_mtok, output_per_mtok, cache_read_per_mtok?, cache_write_per_mtok?,
    valid_from?, valid_to?}`` with decimal-string amounts; raises
    :class:`InvalidPriceOverride`."""
    if not isinstance(document, list):
        raise InvalidPriceOverride("price overrides must be a JSON list")
    if len(document) > MAX_PRICE_OVERRIDES:
        raise InvalidPriceOverride(f"at most {MAX_PRICE_OVERRIDES} price overrides")
    return [_spec(item) for item in document]


def _stored_spec(row: RowMapping) -> PriceOverrideSpec:
    return PriceOverrideSpec(
        model=row["model"],
        provider=row["provider"],
        input_per_mtok=usd_str(parse_usd(row["input_per_mtok"])),
        output_per_mtok=usd_str(parse_usd(row["output_per_mtok"])),
        cache_read_per_mtok=_shown(row["cache_read_per_mtok"]),
        cache_write_per_mtok=_shown(row["cache_write_per_mtok"]),
        valid_from_ms=row["valid_from_ms"],
        valid_to_ms=row["valid_to_ms"],
    )


def _shown(amount: str | None) -> str | None:
    return None if amount is None else usd_str(parse_usd(amount))


def replace_price_overrides(
    connection: Connection, tenant_id: int, specs: Sequence[PriceOverrideSpec]
) -> None:
    """Make ``specs`` the tenant's negotiated rates. An override identical to one already
    stored keeps its id (events priced with it name it in their price version); overrides
    left out are deleted (the events priced with them keep their figures and version).
    Replacements of one tenant's list take turns: the last one is the list."""
    lock_tenant(connection, Locked.SETTINGS, tenant_id)
    stored = connection.execute(
        select(_OVERRIDES).where(_OVERRIDES.c.tenant_id == tenant_id)
    ).mappings()
    ids: dict[tuple[Any, ...], list[int]] = {}
    for row in stored:
        ids.setdefault(astuple(_stored_spec(row)), []).append(row["id"])
    wanted = {astuple(spec): spec for spec in specs}
    gone = []
    for key, row_ids in ids.items():  # identical rows stored twice are kept once
        gone.extend(row_ids[1:] if key in wanted else row_ids)
    if gone:
        connection.execute(delete(_OVERRIDES).where(_OVERRIDES.c.id.in_(gone)))
    new = [spec for key, spec in wanted.items() if key not in ids]
    if new:
        connection.execute(
            insert(_OVERRIDES),
            [
                {
                    "tenant_id": tenant_id,
                    "provider": spec.provider,
                    "model": spec.model,
                    "input_per_mtok": spec.input_per_mtok,
                    "output_per_mtok": spec.output_per_mtok,
                    "cache_read_per_mtok": spec.cache_read_per_mtok,
                    "cache_write_per_mtok": spec.cache_write_per_mtok,
                    "valid_from_ms": spec.valid_from_ms,
                    "valid_to_ms": spec.valid_to_ms,
                }
                for spec in new
            ],
        )


def list_price_overrides(connection: Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's negotiated rates as the API shows them, oldest first."""
    rows = connection.execute(
        select(_OVERRIDES).where(_OVERRIDES.c.tenant_id == tenant_id).order_by(_OVERRIDES.c.id)
    ).mappings()
    shown = []
    for row in rows:
        spec = _stored_spec(row)
        shown.append(
            {
                "id": row["id"],
                "model": spec.model,
                "provider": spec.provider,
                "input_per_mtok": spec.input_per_mtok,
                "output_per_mtok": spec.output_per_mtok,
                "cache_read_per_mtok": spec.cache_read_per_mtok,
                "cache_write_per_mtok": spec.cache_write_per_mtok,
                "valid_from": None if spec.valid_from_ms is None else to_iso(spec.valid_from_ms),
                "valid_to": None if spec.valid_to_ms is None else to_iso(spec.valid_to_ms),
            }
        )
    return shown
