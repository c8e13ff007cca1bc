"""Spend over time: cost, events and tokens per UTC hour, day, ISO week (from Monday) or
calendar month, optionally per group, with every bucket of the range present (an empty one
at zero) so that a chart has a continuous axis.

Buckets are summed from the rollups' days (weeks and months from days) and hours where a
rollup holds the question, from the events otherwise (see
:func:`p402.ledger.events.spend_groups`). Buckets are whole calendar periods: the first one
starts at or before ``from``, the last one ends at or after ``to``, and only the events of
``[from, to)`` count in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Connection

from p402.instrumentation.vocabulary import BudgetPeriod
from p402.ledger.budgets import period_bounds
from p402.ledger.clock import to_iso
from p402.ledger.events import (
    HOUR_MS,
    EventFilter,
    GroupKey,
    Measures,
    by_cost,
    spend_groups,
    total_of,
)
from p402.ledger.rollups import DAY_MS

__all__ = [
    "DEFAULT_SPANS_MS",
    "MAX_BUCKETS",
    "Interval",
    "InvalidTimeseries",
    "bucket_bounds",
    "spend_timeseries",
]

MAX_BUCKETS: Final = 1000


class Interval(StrEnum):
    """How long one bucket of a time series is (UTC calendar periods)."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


DEFAULT_SPANS_MS: Final = {
    Interval.HOUR: DAY_MS,
    Interval.DAY: 30 * DAY_MS,
    Interval.WEEK: 12 * 7 * DAY_MS,
    Interval.MONTH: 365 * DAY_MS,
}
"""How far back a series reaches when no ``from`` is given."""


class InvalidTimeseries(ValueError):
    """A time series that cannot be answered as asked (empty range, too many buckets)."""


def bucket_bounds(interval: Interval, ms: int) -> tuple[int, int]:
    """The bucket of ``interval`` containing ``ms``: ``[start, end)`` in epoch ms."""
    if interval is Interval.HOUR:
        start = ms - ms % HOUR_MS
        return start, start + HOUR_MS
    return period_bounds(BudgetPeriod(interval.value), ms)


def _buckets(interval: Interval, from_ms: int, to_ms: int) -> list[tuple[int, int]]:
    buckets: list[tuple[int, int]] = []
    start = from_ms
    while start < to_ms:
        bounds = bucket_bounds(interval, start)
        buckets.append(bounds)
        if len(buckets) > MAX_BUCKETS:
            raise InvalidTimeseries(
                f"more than {MAX_BUCKETS} buckets of a {interval.value}: "
                "narrow the range or choose a longer interval"
            )
        start = bounds[1]
    return buckets


def spend_timeseries(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    interval: Interval,
    *,
    now_ms: int,
) -> dict[str, Any]:
    """The tenant's spend per bucket of ``interval`` over the filter's ``[from, to)`` (by
    default: up to ``now_ms``, from :data:`DEFAULT_SPANS_MS` before ``to``), per group of
    ``dimensions`` within each bucket (most costly first), plus the range's total.

    Raises :class:`InvalidTimeseries` for an empty range or more than :data:`MAX_BUCKETS`.
    """
    to_ms = now_ms if event_filter.to_ms is None else event_filter.to_ms
    from_ms = event_filter.from_ms
    if from_ms is None:
        from_ms = to_ms - DEFAULT_SPANS_MS[interval]
    if from_ms >= to_ms:
        raise InvalidTimeseries("from must be before to")
    buckets = _buckets(interval, from_ms, to_ms)
    ranged = replace(event_filter, from_ms=from_ms, to_ms=to_ms)
    bucket_ms = HOUR_MS if interval is Interval.HOUR else DAY_MS
    groups = spend_groups(connection, tenant_id, ranged, dimensions, bucket_ms=bucket_ms)
    # Fold hours or days into their buckets: bucket start → group values → figures.
    folded: dict[int, dict[GroupKey, Measures]] = {start: {} for start, _ in buckets}
    for (unit_start, *values), measures in groups.items():
        in_bucket = folded[bucket_bounds(interval, unit_start)[0]]
        in_bucket.setdefault(tuple(values), Measures()).add(measures)
    data = []
    for start, end in buckets:
        in_bucket = folded[start]
        point: dict[str, Any] = {
            "start": to_iso(start),
            "end": to_iso(end),
            **total_of(in_bucket.values()).json(),
        }
        if dimensions:
            point["groups"] = [
                {**dict(zip(dimensions, values, strict=True)), **measures.json()}
                for values, measures in by_cost(in_bucket)
            ]
        data.append(point)
    return {
        "interval": interval.value,
        "from": to_iso(from_ms),
        "to": to_iso(to_ms),
        "data": data,
        "total": total_of(groups.values()).json(),
        "next_cursor": None,
    }
