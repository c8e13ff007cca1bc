"""Drift: how spend changed between a baseline window and the current window, per group.

For each group (a combination of the ``group_by`` values present in either window) and for
the whole of the matching events, it compares:

- **cost**, **events**, **cost per event** (the cost over the *priced* events: unpriced
  events carry no cost and would understate it) and **cost per day** (the cost over the
  window's length, so that windows of different lengths compare);
- the **model mix**: each model's share of the group's spend in either window;
- the **outcomes** reported for the group's events (``accepted``, ``rejected``, …): each
  outcome's share of the events that have one, when any has.

Changes are ``absolute`` (current - baseline) and ``relative`` ((current - baseline) ÷
baseline, ``None`` when the baseline is zero). Money is a decimal string in USD; shares and
relative changes are decimal strings rounded to :data:`RATIO_PLACES` places.

Cost, events and the model mix come from the spend rollup when the dimensions and filters
fit it (see :func:`p402.ledger.events.spend_groups`); outcomes are not a rollup dimension
and come from the events that have one.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from sqlalchemy import Connection

from p402.instrumentation.money import from_picos, to_picos, usd_str
from p402.ledger.clock import to_iso
from p402.ledger.events import (
    EventFilter,
    GroupKey,
    Measures,
    by_cost,
    cost_rank,
    spend_groups,
)
from p402.ledger.paging import InvalidCursor, decode_cursor, encode_cursor
from p402.ledger.rollups import DAY_MS

__all__ = ["RATIO_PLACES", "InvalidWindows", "Window", "drift"]

RATIO_PLACES: Final = 6
_QUANTUM: Final = Decimal(1).scaleb(-RATIO_PLACES)


class InvalidWindows(ValueError):
    """A baseline or current window that cannot be compared, with the reason."""


@dataclass(frozen=True, slots=True)
class Window:
    """``[from_ms, to_ms)`` in epoch ms."""

    from_ms: int
    to_ms: int

    def check(self, name: str) -> None:
        if self.from_ms >= self.to_ms:
            raise InvalidWindows(f"the {name} window must begin before it ends")

    def json(self) -> dict[str, str]:
        return {"from": to_iso(self.from_ms), "to": to_iso(self.to_ms)}


def _ratio(numerator: int | Decimal, denominator: int | Decimal) -> str | None:
    if not denominator:
        return None
    value = (Decimal(numerator) / Decimal(denominator)).quantize(_QUANTUM, ROUND_HALF_EVEN)
    return usd_str(value)  # a plain decimal string, no exponent


def _usd(picos: int | None) -> str | None:
    return None if picos is None else usd_str(from_picos(picos))


def _change_usd(baseline: int | None, current: int | None) -> dict[str, str | None]:
    if baseline is None or current is None:
        return {"absolute": None, "relative": None}
    return {"absolute": _usd(current - baseline), "relative": _ratio(current - baseline, baseline)}


def _change_count(baseline: int, current: int) -> dict[str, Any]:
    return {"absolute": current - baseline, "relative": _ratio(current - baseline, baseline)}


def _per_event_picos(measures: Measures) -> int | None:
    if not measures.priced_events:
        return None
    return to_picos(from_picos(measures.cost_picos) / measures.priced_events)


def _per_day_picos(measures: Measures, window: Window) -> int:
    return to_picos(from_picos(measures.cost_picos) * DAY_MS / (window.to_ms - window.from_ms))


def _figures(measures: Measures, window: Window) -> dict[str, Any]:
    return {
        **measures.json(),
        "cost_per_event_usd": _usd(_per_event_picos(measures)),
        "cost_per_day_usd": _usd(_per_day_picos(measures, window)),
    }


def _shares(
    baseline: Mapping[Any, int],
    current: Mapping[Any, int],
    name: str,
    amount: str,
    show: Callable[[int], Any],
) -> list[dict[str, Any]]:
    """Each key's share of the total in either window and the change of its share (a
    fraction, e.g. ``0.25`` for 25 points), largest now first."""
    baseline_total, current_total = sum(baseline.values()), sum(current.values())
    rows = []
    for key in sorted(set(baseline) | set(current), key=lambda k: (-current.get(k, 0), str(k))):
        before, after = baseline.get(key, 0), current.get(key, 0)
        before_share = _ratio(before, baseline_total)
        after_share = _ratio(after, current_total)
        change = None
        if before_share is not None and after_share is not None:
            change = usd_str(Decimal(after_share) - Decimal(before_share))
        rows.append(
            {
                name: key,
                f"baseline_{amount}": show(before),
                f"current_{amount}": show(after),
                "baseline_share": before_share,
                "current_share": after_share,
                "share_change": change,
            }
        )
    return rows


def _usd_of(picos: int) -> str:
    return usd_str(from_picos(picos))


def _count_of(count: int) -> int:
    return count


@dataclass(slots=True)
class _Side:
    """One window's figures for one group: totals, cost per model, events per outcome."""

    measures: Measures
    models: dict[Any, int]
    outcomes: dict[Any, int]


def _sides(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    window: Window,
) -> dict[GroupKey, _Side]:
    windowed = replace(event_filter, from_ms=window.from_ms, to_ms=window.to_ms)
    width = len(dimensions)
    sides: dict[GroupKey, _Side] = {}

    def side(key: GroupKey) -> _Side:
        if key not in sides:
            sides[key] = _Side(Measures(), {}, {})
        return sides[key]

    by_model = spend_groups(connection, tenant_id, windowed, [*dimensions, "model"])
    for key, measures in by_model.items():
        group = side(key[:width])
        group.measures.add(measures)
        group.models[key[width]] = group.models.get(key[width], 0) + measures.cost_picos
    with_outcome = replace(windowed, present=windowed.present | {"outcome"})
    by_outcome = spend_groups(connection, tenant_id, with_outcome, [*dimensions, "outcome"])
    for key, measures in by_outcome.items():
        side(key[:width]).outcomes[key[width]] = measures.events
    return sides


def _comparison(baseline: _Side, current: _Side, windows: tuple[Window, Window]) -> dict[str, Any]:
    before, after = baseline.measures, current.measures
    return {
        "baseline": _figures(before, windows[0]),
        "current": _figures(after, windows[1]),
        "change": {
            "cost_usd": _change_usd(before.cost_picos, after.cost_picos),
            "events": _change_count(before.events, after.events),
            "cost_per_event_usd": _change_usd(_per_event_picos(before), _per_event_picos(after)),
            "cost_per_day_usd": _change_usd(
                _per_day_picos(before, windows[0]), _per_day_picos(after, windows[1])
            ),
        },
        "model_mix": _shares(baseline.models, current.models, "model", "cost_usd", _usd_of),
        "outcomes": _shares(baseline.outcomes, current.outcomes, "outcome", "events", _count_of),
    }


def _whole(sides: Iterable[_Side]) -> _Side:
    whole = _Side(Measures(), {}, {})
    for side in sides:
        whole.measures.add(side.measures)
        for model, picos in side.models.items():
            whole.models[model] = whole.models.get(model, 0) + picos
        for outcome, events in side.outcomes.items():
            whole.outcomes[outcome] = whole.outcomes.get(outcome, 0) + events
    return whole


def drift(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    *,
    baseline: Window,
    current: Window,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The change of every group's spend from ``baseline`` to ``current`` (see the module
    docstring), groups with the most current spend first, ``limit`` at a time after
    ``cursor`` (all with no ``limit``), and of the whole. The filter's equality conditions
    select the events; its time range is ignored (the windows are).

    Raises :class:`InvalidWindows` when a window is empty or reversed, and
    :class:`~p402.ledger.paging.InvalidCursor` for a cursor that is not a ``next_cursor`` of
    the same ``group_by``.
    """
    baseline.check("baseline")
    current.check("current")
    windows = (baseline, current)
    before = _sides(connection, tenant_id, event_filter, dimensions, baseline)
    after = _sides(connection, tenant_id, event_filter, dimensions, current)
    empty = _Side(Measures(), {}, {})
    order = by_cost(
        {
            key: after[key].measures if key in after else Measures()
            for key in set(before) | set(after)
        }
    )
    start = 0 if cursor is None else _start_after(order, cursor, len(dimensions))
    page = order[start:] if limit is None else order[start : start + limit]
    next_cursor = None
    if limit is not None and start + limit < len(order):
        cost, events, values = cost_rank(page[-1])
        next_cursor = encode_cursor(-cost, json.dumps([-events, *values], ensure_ascii=False))
    rows = [
        {
            **dict(zip(dimensions, key, strict=True)),
            **_comparison(before.get(key, empty), after.get(key, empty), windows),
        }
        for key, _ in page
    ]
    whole = _comparison(_whole(before.values()), _whole(after.values()), windows)
    return {
        "baseline": baseline.json(),
        "current": current.json(),
        "data": rows,
        "total": whole,
        "next_cursor": next_cursor,
    }


def _start_after(order: list[tuple[GroupKey, Measures]], cursor: str, width: int) -> int:
    """Where the page after ``cursor`` begins in ``order`` (see :func:`cost_rank`)."""
    cost, text = decode_cursor(cursor)
    try:
        events, *values = json.loads(text)
    except (ValueError, TypeError):
        raise InvalidCursor(f"invalid cursor: {cursor!r}") from None
    if (
        not isinstance(events, int)
        or len(values) != width
        or not all(isinstance(value, str) for value in values)
    ):
        raise InvalidCursor(f"invalid cursor: {cursor!r}")
    return bisect.bisect_right(order, (-cost, -events, tuple(values)), key=cost_rank)
