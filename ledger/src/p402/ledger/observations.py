"""Routing observations: per task type and model tier, what calls cost and how their outcomes
were judged, measured over a trailing window (:data:`WINDOW_DAYS`).

For each task type and tier (``economy``, ``standard``, ``premium`` from
:mod:`p402.instrumentation.tiers` with the tenant's overrides, ``unclassified`` for models
neither knows)
the scheduler records the events, their cost and mean cost per priced call, the outcomes
reported for them (``POST /v1/outcomes``, or with the event itself in ``POST /v1/events``:
unscored, and only when no outcome was reported for the event or its session), the acceptance
rate (``accepted`` among them) and the mean quality score of the scored ones.

An event's task type is its own, else that of its outcome, else that of its session's
outcome. An event outcome counts for its event's tier; a session outcome counts for the tier
of its session's events when they are all of one task type and one tier (a session that
mixed tiers says nothing about either).

Each observation compares the economy tier with the premium tier. Its recommendation stays
``blocked`` until both tiers have at least :data:`MIN_SCORED_OUTCOMES` scored outcomes;
then it says whether the economy tier's mean quality is within :data:`QUALITY_MARGIN` of the
premium tier's (``economy_matches_premium``) or not (``keep_premium``), with the measured
figures. It never states a savings percentage: only what was measured.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, case, delete, func, insert, select
from sqlalchemy.orm import aliased

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.tiers import ModelTier, tier_of
from p402.instrumentation.vocabulary import Outcome as OutcomeValue
from p402.ledger.clock import to_iso
from p402.ledger.events import InvalidCursor, Page
from p402.ledger.models import EconomicEvent, Outcome, RoutingObservation, Tenant
from p402.ledger.models import Session as SessionRow
from p402.ledger.policies import tier_overrides
from p402.ledger.rollups import DAY_MS

__all__ = [
    "MIN_SCORED_OUTCOMES",
    "QUALITY_MARGIN",
    "UNCLASSIFIED",
    "WINDOW_DAYS",
    "compute_observations",
    "list_observations",
    "observe_tenant",
]

WINDOW_DAYS: Final = 30
MIN_SCORED_OUTCOMES: Final = 30
"""Scored outcomes each of the economy and premium tiers needs before a comparison counts."""
QUALITY_MARGIN: Final = Decimal("0.05")
"""How far below the premium tier's mean quality (on the 0 to 1 scale) the economy tier's may
be and still be said to match it."""
UNCLASSIFIED: Final = "unclassified"
_TIER_ORDER: Final = (*(tier.value for tier in ModelTier), UNCLASSIFIED)
_FOUR_PLACES: Final = Decimal("0.0001")

_EVENTS = EconomicEvent.__table__  # type: ignore[attr-defined]
_OUTCOMES = Outcome.__table__  # type: ignore[attr-defined]
_OBSERVATIONS = RoutingObservation.__table__  # type: ignore[attr-defined]
_SESSIONS = SessionRow.__table__  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Measures:
    models: Counter[str] = field(default_factory=Counter)
    events: int = 0
    priced_events: int = 0
    cost_picos: int = 0
    outcomes: int = 0
    accepted: int = 0
    scored_outcomes: int = 0
    quality_sum: float = 0.0

    def add_outcome(self, outcome: str, quality: float | None) -> None:
        self.outcomes += 1
        self.accepted += outcome == OutcomeValue.ACCEPTED.value
        if quality is not None:
            self.scored_outcomes += 1
            self.quality_sum += quality


def _tier(model: str | None, overrides: Mapping[str, ModelTier | str] | None) -> str:
    tier = tier_of(model, overrides) if model else None
    return UNCLASSIFIED if tier is None else tier.value


def _measure(
    connection: Connection,
    tenant_id: int,
    start_ms: int,
    end_ms: int,
    overrides: Mapping[str, ModelTier | str] | None,
) -> dict[tuple[str, str], _Measures]:
    own = aliased(_OUTCOMES, name="own")
    of_session = aliased(_OUTCOMES, name="of_session")
    task_type = func.coalesce(_EVENTS.c.task_type, own.c.task_type, of_session.c.task_type)
    model = func.coalesce(_EVENTS.c.model_used, _EVENTS.c.model_requested)
    joined = _EVENTS.outerjoin(
        own, and_(own.c.tenant_id == _EVENTS.c.tenant_id, own.c.event_id == _EVENTS.c.event_id)
    ).outerjoin(
        of_session,
        and_(
            of_session.c.tenant_id == _EVENTS.c.tenant_id,
            of_session.c.session == _EVENTS.c.session,
        ),
    )
    # An event's outcome: the one reported for it, else the one it arrived with, unless its
    # session's reported outcome (counted per session, below) is what set it.
    carried = and_(own.c.id.is_(None), of_session.c.id.is_(None))
    outcome = func.coalesce(own.c.outcome, case((carried, _EVENTS.c.outcome)))
    rows = connection.execute(
        select(
            task_type.label("task_type"),
            model.label("model"),
            func.count().label("events"),
            func.count(_EVENTS.c.cost_picos).label("priced"),
            func.coalesce(func.sum(_EVENTS.c.cost_picos), 0).label("cost"),
            func.count(outcome).label("outcomes"),
            func.coalesce(
                func.sum(case((outcome == OutcomeValue.ACCEPTED.value, 1), else_=0)), 0
            ).label("accepted"),
            func.count(own.c.quality_score).label("scored"),
            func.coalesce(func.sum(own.c.quality_score), 0).label("quality"),
        )
        .select_from(joined)
        .where(
            _EVENTS.c.tenant_id == tenant_id,
            _EVENTS.c.ts_ms >= start_ms,
            _EVENTS.c.ts_ms < end_ms,
            task_type.is_not(None),
        )
        .group_by(task_type, model)
    ).all()
    measures: dict[tuple[str, str], _Measures] = defaultdict(_Measures)
    for row in rows:
        tier = _tier(row.model, overrides)
        found = measures[(row.task_type, tier)]
        if row.model:
            found.models[row.model] += int(row.events)
        found.events += int(row.events)
        found.priced_events += int(row.priced)
        found.cost_picos += int(row.cost)
        found.outcomes += int(row.outcomes)
        found.accepted += int(row.accepted)
        found.scored_outcomes += int(row.scored)
        found.quality_sum += float(row.quality)
    _add_session_outcomes(connection, tenant_id, start_ms, end_ms, overrides, measures)
    return measures


def _add_session_outcomes(
    connection: Connection,
    tenant_id: int,
    start_ms: int,
    end_ms: int,
    overrides: Mapping[str, ModelTier | str] | None,
    measures: dict[tuple[str, str], _Measures],
) -> None:
    reported = connection.execute(
        select(
            _OUTCOMES.c.session,
            _OUTCOMES.c.outcome,
            _OUTCOMES.c.quality_score,
            _OUTCOMES.c.task_type,
        )
        .select_from(
            _OUTCOMES.join(
                _SESSIONS,
                and_(
                    _SESSIONS.c.tenant_id == _OUTCOMES.c.tenant_id,
                    _SESSIONS.c.name == _OUTCOMES.c.session,
                ),
            )
        )
        .where(
            _OUTCOMES.c.tenant_id == tenant_id,
            _OUTCOMES.c.session.is_not(None),
            _SESSIONS.c.last_event_ms >= start_ms,
            _SESSIONS.c.first_event_ms < end_ms,
        )
    ).all()
    for chunk in _chunks(reported, 500):
        by_session = {row.session: row for row in chunk}
        kinds: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
        for session, task_type, model in connection.execute(
            select(
                _EVENTS.c.session,
                _EVENTS.c.task_type,
                func.coalesce(_EVENTS.c.model_used, _EVENTS.c.model_requested),
            )
            .where(
                _EVENTS.c.tenant_id == tenant_id,
                _EVENTS.c.session.in_(list(by_session)),
                _EVENTS.c.ts_ms >= start_ms,
                _EVENTS.c.ts_ms < end_ms,
            )
            .distinct()
        ):
            kinds[session].add(
                (task_type or by_session[session].task_type, _tier(model, overrides))
            )
        for session, row in by_session.items():
            if len(kinds[session]) != 1:
                continue  # no events in the window, or several task types or tiers
            ((task_type, tier),) = kinds[session]
            if task_type is not None:
                measures[(task_type, tier)].add_outcome(row.outcome, row.quality_score)


def _chunks(rows: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def observe_tenant(
    connection: Connection,
    tenant_id: int,
    now_ms: int,
    *,
    overrides: Mapping[str, ModelTier | str] | None = None,
    window_days: int = WINDOW_DAYS,
) -> int:
    """Recompute the tenant's observations over the window ending at ``now_ms``; returns how
    many task type and tier rows it holds."""
    start_ms = now_ms - window_days * DAY_MS
    measures = _measure(connection, tenant_id, start_ms, now_ms, overrides)
    connection.execute(delete(_OBSERVATIONS).where(_OBSERVATIONS.c.tenant_id == tenant_id))
    rows = [
        {
            "tenant_id": tenant_id,
            "task_type": task_type,
            "tier": tier,
            "models": json.dumps(dict(sorted(found.models.items())), separators=(",", ":")),
            "events": found.events,
            "priced_events": found.priced_events,
            "cost_picos": found.cost_picos,
            "outcomes": found.outcomes,
            "accepted": found.accepted,
            "scored_outcomes": found.scored_outcomes,
            "quality_sum": found.quality_sum,
            "window_start_ms": start_ms,
            "window_end_ms": now_ms,
            "computed_ms": now_ms,
        }
        for (task_type, tier), found in sorted(measures.items())
    ]
    if rows:
        connection.execute(insert(_OBSERVATIONS), rows)
    return len(rows)


def compute_observations(engine: Engine, now_ms: int) -> int:
    """The scheduler's job: recompute every tenant's observations (with the tenant's model tier
    overrides), one transaction each."""
    with engine.connect() as connection:
        tenants = list(connection.execute(select(_TENANTS.c.id)).scalars())
    total = 0
    for tenant_id in tenants:
        with engine.begin() as connection:
            overrides = tier_overrides(connection, tenant_id)
            total += observe_tenant(connection, tenant_id, now_ms, overrides=overrides)
    return total


# --- reading -------------------------------------------------------------------------------


def _ratio(numerator: Decimal | float | int, denominator: int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / denominator).quantize(_FOUR_PLACES, rounding=ROUND_HALF_EVEN)


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _tier_json(row: Mapping[str, Any]) -> dict[str, Any]:
    mean_cost = None
    if row["priced_events"]:
        mean_picos = (Decimal(row["cost_picos"]) / row["priced_events"]).to_integral_value(
            rounding=ROUND_HALF_EVEN
        )
        mean_cost = usd_str(from_picos(int(mean_picos)))
    return {
        "tier": row["tier"],
        "models": json.loads(row["models"]),
        "events": row["events"],
        "priced_events": row["priced_events"],
        "cost_usd": usd_str(from_picos(row["cost_picos"])),
        "mean_cost_usd": mean_cost,
        "outcomes": row["outcomes"],
        "accepted": row["accepted"],
        "acceptance_rate": _number(_ratio(row["accepted"], row["outcomes"])),
        "scored_outcomes": row["scored_outcomes"],
        "mean_quality": _number(_mean_quality(row)),
    }


def _mean_quality(row: Mapping[str, Any] | None) -> Decimal | None:
    if row is None:
        return None
    return _ratio(Decimal(repr(row["quality_sum"])), row["scored_outcomes"])


def _recommendation(
    economy: Mapping[str, Any] | None, premium: Mapping[str, Any] | None
) -> tuple[bool | None, dict[str, str]]:
    scored = {
        name: 0 if row is None else row["scored_outcomes"]
        for name, row in (("economy", economy), ("premium", premium))
    }
    if min(scored.values()) < MIN_SCORED_OUTCOMES:
        return None, {
            "status": "blocked",
            "reason": (
                f"no quality baseline yet: the economy and premium tiers each need at least "
                f"{MIN_SCORED_OUTCOMES} scored outcomes (economy has {scored['economy']}, "
                f"premium has {scored['premium']})"
            ),
        }
    economy_quality, premium_quality = _mean_quality(economy), _mean_quality(premium)
    assert economy is not None
    assert premium is not None
    assert economy_quality is not None
    assert premium_quality is not None
    matches = economy_quality >= premium_quality - QUALITY_MARGIN
    figures = (
        f"economy mean quality {economy_quality} over {scored['economy']} scored outcomes, "
        f"premium {premium_quality} over {scored['premium']}"
    )
    costs = [_tier_json(row)["mean_cost_usd"] for row in (economy, premium)]
    if all(cost is not None for cost in costs):
        figures += f"; mean cost per call: economy {costs[0]} USD, premium {costs[1]} USD"
    if matches:
        return True, {
            "status": "economy_matches_premium",
            "reason": f"the economy tier's quality is within {QUALITY_MARGIN} of the premium "
            f"tier's: {figures}",
        }
    return False, {
        "status": "keep_premium",
        "reason": f"the economy tier's quality is more than {QUALITY_MARGIN} below the "
        f"premium tier's: {figures}",
    }


def _observation_json(task_type: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda row: _TIER_ORDER.index(row["tier"]))
    by_tier = {row["tier"]: row for row in rows}
    economy, premium = by_tier.get(ModelTier.ECONOMY.value), by_tier.get(ModelTier.PREMIUM.value)
    matches, recommendation = _recommendation(economy, premium)
    return {
        "task_type": task_type,
        "window_start": to_iso(rows[0]["window_start_ms"]),
        "window_end": to_iso(rows[0]["window_end_ms"]),
        "computed_at": to_iso(rows[0]["computed_ms"]),
        "tiers": [_tier_json(row) for row in rows],
        "economy_matches_premium": matches,
        "economy_mean_quality": _number(_mean_quality(economy)),
        "premium_mean_quality": _number(_mean_quality(premium)),
        "quality_margin": float(QUALITY_MARGIN),
        "min_scored_outcomes": MIN_SCORED_OUTCOMES,
        "recommendation": recommendation,
    }


def _encode(task_type: str) -> str:
    return base64.urlsafe_b64encode(task_type.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor: {cursor!r}") from None


def list_observations(
    connection: Connection,
    tenant_id: int,
    *,
    task_type: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """The tenant's latest observations, one per task type, in task type order."""
    names = select(_OBSERVATIONS.c.task_type).where(_OBSERVATIONS.c.tenant_id == tenant_id)
    if task_type is not None:
        names = names.where(_OBSERVATIONS.c.task_type == task_type)
    if cursor:
        names = names.where(_OBSERVATIONS.c.task_type > _decode(cursor))
    chosen = list(
        connection.execute(
            names.distinct().order_by(_OBSERVATIONS.c.task_type).limit(limit + 1)
        ).scalars()
    )
    next_cursor = None
    if len(chosen) > limit:
        chosen = chosen[:limit]
        next_cursor = _encode(chosen[-1])
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if chosen:
        for row in connection.execute(
            select(_OBSERVATIONS).where(
                _OBSERVATIONS.c.tenant_id == tenant_id, _OBSERVATIONS.c.task_type.in_(chosen)
            )
        ).mappings():
            grouped[row["task_type"]].append(dict(row))
    return Page([_observation_json(name, grouped[name]) for name in chosen], next_cursor)
