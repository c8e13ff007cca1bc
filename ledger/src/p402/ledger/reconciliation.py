"""Reconciliation: the providers' own usage and cost reports against the metered events.

Per provider, UTC day and model, the provider's figures (imported reports, summed over the
day's buckets) stand beside the metered figures (the spend rollup), with coverage, the
unattributed spend on either side and the price drift between them. The formulas are
documented where users read them: ``GET /v1/reconciliation``
(:func:`p402.api.routes.reconciliation.get_reconciliation`). Sums of money are exact;
ratios are rounded half-even (percentages to 0.01, rates per million tokens to 1e-6 USD) from
unrounded figures; a figure that cannot be computed is ``None``, never 0.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from sqlalchemy import Connection, and_, case, func, select

from p402.instrumentation.money import from_picos, usd_str
from p402.ledger.clock import to_iso
from p402.ledger.imports import IMPORTED
from p402.ledger.models import SpendRollup
from p402.ledger.rollups import DAY_MS

__all__ = ["ReconciliationFigures", "reconcile"]

ROLLUPS = SpendRollup.__table__  # type: ignore[attr-defined]
_PCT: Final = Decimal("0.01")
_RATE: Final = Decimal("0.000001")
_MILLION: Final = Decimal(1_000_000)
_HUNDRED: Final = Decimal(100)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def _ratio(numerator: Decimal, denominator: Decimal | None) -> Decimal | None:
    if denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _round(value: Decimal | None, quantum: Decimal) -> str | None:
    return None if value is None else usd_str(value.quantize(quantum, rounding=ROUND_HALF_EVEN))


def _usd(picos: int | None) -> str | None:
    return None if picos is None else usd_str(from_picos(picos))


@dataclass(slots=True)
class ReconciliationFigures:
    """The provider's and the metered figures of one provider, day and model (or a total)."""

    provider_cost_picos: int | None = None
    provider_unmapped_picos: int | None = None
    provider_input_tokens: int | None = None
    provider_output_tokens: int | None = None
    provider_cache_read_tokens: int | None = None
    provider_cache_write_tokens: int | None = None
    provider_requests: int | None = None
    metered_cost_picos: int = 0
    metered_unowned_picos: int = 0
    metered_events: int = 0
    metered_unpriced_events: int = 0
    metered_input_tokens: int = 0
    metered_output_tokens: int = 0

    def absorb(self, other: ReconciliationFigures) -> None:
        for name in (
            "provider_cost_picos",
            "provider_unmapped_picos",
            "provider_input_tokens",
            "provider_output_tokens",
            "provider_cache_read_tokens",
            "provider_cache_write_tokens",
            "provider_requests",
        ):
            setattr(self, name, _add(getattr(self, name), getattr(other, name)))
        for name in (
            "metered_cost_picos",
            "metered_unowned_picos",
            "metered_events",
            "metered_unpriced_events",
            "metered_input_tokens",
            "metered_output_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def json(self) -> dict[str, Any]:
        provider_cost = (
            None if self.provider_cost_picos is None else from_picos(self.provider_cost_picos)
        )
        metered_cost = from_picos(self.metered_cost_picos)
        provider_tokens = _add(self.provider_input_tokens, self.provider_output_tokens)
        metered_tokens = self.metered_input_tokens + self.metered_output_tokens
        gap = None if provider_cost is None else provider_cost - metered_cost
        provider_rate = (
            None
            if provider_cost is None
            else _ratio(provider_cost * _MILLION, _decimal(provider_tokens))
        )
        metered_rate = _ratio(metered_cost * _MILLION, Decimal(metered_tokens))
        drift = (
            None
            if provider_rate is None or metered_rate is None
            else _ratio((provider_rate - metered_rate) * _HUNDRED, metered_rate)
        )
        return {
            "provider_cost_usd": _usd(self.provider_cost_picos),
            "provider_unmapped_usd": _usd(self.provider_unmapped_picos),
            "provider_input_tokens": self.provider_input_tokens,
            "provider_output_tokens": self.provider_output_tokens,
            "provider_cache_read_tokens": self.provider_cache_read_tokens,
            "provider_cache_write_tokens": self.provider_cache_write_tokens,
            "provider_requests": self.provider_requests,
            "metered_cost_usd": usd_str(metered_cost),
            "metered_unowned_usd": _usd(self.metered_unowned_picos),
            "metered_events": self.metered_events,
            "metered_unpriced_events": self.metered_unpriced_events,
            "metered_input_tokens": self.metered_input_tokens,
            "metered_output_tokens": self.metered_output_tokens,
            "cost_coverage_pct": _round(_ratio(metered_cost * _HUNDRED, provider_cost), _PCT),
            "token_coverage_pct": _round(
                _ratio(Decimal(metered_tokens) * _HUNDRED, _decimal(provider_tokens)), _PCT
            ),
            "cost_gap_usd": None if gap is None else usd_str(gap),
            "unmatched_provider_usd": None if gap is None else usd_str(max(gap, Decimal(0))),
            "provider_usd_per_mtok": _round(provider_rate, _RATE),
            "metered_usd_per_mtok": _round(metered_rate, _RATE),
            "price_drift_pct": _round(drift, _PCT),
        }


def _decimal(value: int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


_Key = tuple[str, int, str]  # provider, day, model ("" when none)


def _provider_figures(
    connection: Connection,
    tenant_id: int,
    providers: Iterable[str] | None,
    from_day: int | None,
    to_day: int | None,
) -> dict[_Key, ReconciliationFigures]:
    c = IMPORTED.c
    is_cost = c.kind == "cost"
    is_usage = c.kind == "usage"
    unmapped = and_(is_cost, c.department.is_(None), c.project.is_(None), c.employee.is_(None))
    conditions = [c.tenant_id == tenant_id]
    if providers is not None:
        conditions.append(c.provider.in_(list(providers)))
    if from_day is not None:
        conditions.append(c.bucket_start_ms >= from_day * DAY_MS)
    if to_day is not None:
        conditions.append(c.bucket_start_ms < to_day * DAY_MS)
    model = func.coalesce(c.model, "")
    statement = (
        select(
            c.provider,
            c.bucket_start_ms,
            model.label("model"),
            func.sum(case((is_cost, c.cost_picos))).label("cost"),
            func.sum(case((unmapped, c.cost_picos))).label("unmapped"),
            func.sum(case((is_usage, c.input_tokens))).label("input_tokens"),
            func.sum(case((is_usage, c.output_tokens))).label("output_tokens"),
            func.sum(case((is_usage, c.cache_read_tokens))).label("cache_read_tokens"),
            func.sum(case((is_usage, c.cache_write_tokens))).label("cache_write_tokens"),
            func.sum(case((is_usage, c.requests))).label("requests"),
            func.count().filter(is_cost).label("cost_rows"),
        )
        .where(and_(*conditions))
        .group_by(c.provider, c.bucket_start_ms, model)
    )
    figures: dict[_Key, ReconciliationFigures] = defaultdict(ReconciliationFigures)
    for row in connection.execute(statement).mappings():
        day = row["bucket_start_ms"] // DAY_MS
        has_cost = bool(row["cost_rows"])
        figures[(row["provider"], day, row["model"])].absorb(
            ReconciliationFigures(
                provider_cost_picos=_int(row["cost"]) if has_cost else None,
                provider_unmapped_picos=(_int(row["unmapped"]) or 0) if has_cost else None,
                provider_input_tokens=_int(row["input_tokens"]),
                provider_output_tokens=_int(row["output_tokens"]),
                provider_cache_read_tokens=_int(row["cache_read_tokens"]),
                provider_cache_write_tokens=_int(row["cache_write_tokens"]),
                provider_requests=_int(row["requests"]),
            )
        )
    return figures


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _metered_figures(
    connection: Connection,
    tenant_id: int,
    providers: Iterable[str] | None,
    from_day: int | None,
    to_day: int | None,
) -> dict[_Key, ReconciliationFigures]:
    c = ROLLUPS.c
    unowned = and_(c.department == "", c.project == "", c.client == "", c.employee == "")
    conditions = [c.tenant_id == tenant_id]
    if providers is not None:
        conditions.append(c.provider.in_(list(providers)))
    if from_day is not None:
        conditions.append(c.day >= from_day)
    if to_day is not None:
        conditions.append(c.day < to_day)
    statement = (
        select(
            c.provider,
            c.day,
            c.model,
            func.sum(c.cost_picos).label("cost"),
            func.sum(case((unowned, c.cost_picos), else_=0)).label("unowned"),
            func.sum(c.events).label("events"),
            func.sum(c.unpriced_events).label("unpriced"),
            func.sum(c.input_tokens).label("input_tokens"),
            func.sum(c.output_tokens).label("output_tokens"),
        )
        .where(and_(*conditions))
        .group_by(c.provider, c.day, c.model)
        .having(func.sum(c.events) > 0)
    )
    return {
        (row["provider"], int(row["day"]), row["model"]): ReconciliationFigures(
            metered_cost_picos=int(row["cost"] or 0),
            metered_unowned_picos=int(row["unowned"] or 0),
            metered_events=int(row["events"]),
            metered_unpriced_events=int(row["unpriced"] or 0),
            metered_input_tokens=int(row["input_tokens"] or 0),
            metered_output_tokens=int(row["output_tokens"] or 0),
        )
        for row in connection.execute(statement).mappings()
    }


_SNAPSHOT_SUFFIX: Final = re.compile(r"-(\d{8})$")


def _aliases_joined(
    reported: dict[_Key, ReconciliationFigures], keys: set[_Key]
) -> dict[_Key, ReconciliationFigures]:
    """``reported`` with the figures a provider states under a model alias (``claude-sonnet-
    4-5``, as Anthropic's cost export names models) moved to the one dated snapshot of that
    alias (``claude-sonnet-4-5-20250929``) named on the same provider and day, by either side;
    with none, or several, the alias stays a row of its own."""
    snapshots: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for provider_name, day, model in keys:
        if _SNAPSHOT_SUFFIX.search(model):
            snapshots[(provider_name, day, _SNAPSHOT_SUFFIX.sub("", model))].add(model)
    joined: dict[_Key, ReconciliationFigures] = defaultdict(ReconciliationFigures)
    for (provider_name, day, model), figures in reported.items():
        candidates = snapshots.get((provider_name, day, model), set())
        if len(candidates) == 1:
            (model,) = candidates
        joined[(provider_name, day, model)].absorb(figures)
    return dict(joined)


def _imported_providers(connection: Connection, tenant_id: int) -> list[str]:
    return list(
        connection.execute(
            select(IMPORTED.c.provider).where(IMPORTED.c.tenant_id == tenant_id).distinct()
        ).scalars()
    )


def reconcile(
    connection: Connection,
    tenant_id: int,
    *,
    provider: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows per provider, day and model, and totals per provider, over the UTC days that
    overlap ``[from_ms, to_ms)``; without ``provider``, every provider with imported reports."""
    from_day = None if from_ms is None else from_ms // DAY_MS
    to_day = None if to_ms is None else -(-to_ms // DAY_MS)
    providers = [provider] if provider else _imported_providers(connection, tenant_id)
    reported = _provider_figures(connection, tenant_id, providers, from_day, to_day)
    metered = _metered_figures(connection, tenant_id, providers, from_day, to_day)
    reported = _aliases_joined(reported, set(reported) | set(metered))
    rows: list[dict[str, Any]] = []
    totals: dict[str, ReconciliationFigures] = defaultdict(ReconciliationFigures)
    for key in sorted(reported.keys() | metered.keys()):
        provider_name, day, model = key
        figures = ReconciliationFigures()
        for side in (reported, metered):
            if key in side:
                figures.absorb(side[key])
        totals[provider_name].absorb(figures)
        rows.append(
            {
                "provider": provider_name,
                "day": to_iso(day * DAY_MS)[:10],
                "model": model or None,
                **figures.json(),
            }
        )
    return rows, [{"provider": name, **totals[name].json()} for name in sorted(totals)]
