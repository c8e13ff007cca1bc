"""Outcomes: what became of a call's or a session's work (``POST /v1/outcomes``).

An outcome names an event (``event_id``) or a whole session (``session``), says
``accepted``, ``rejected``, ``revised``, ``escalated`` or ``failed``, and may carry a quality
score between 0 and 1 and the task type the work was. The latest outcome reported for an
event or a session replaces the one before. The events' ``outcome`` column follows: an event
outcome sets its event's; a session outcome sets those of the session's events that have no
outcome of their own. (Outcomes are not a rollup dimension, so the spend rollups are
unaffected.)

A batch is all or nothing: an invalid item, or an event or session the tenant does not
have, rejects the whole batch and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Column, Connection, Engine, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from p402.instrumentation.vocabulary import Outcome as OutcomeValue
from p402.ledger.models import EconomicEvent, Outcome
from p402.ledger.models import Session as SessionRow

__all__ = [
    "MAX_OUTCOMES",
    "InvalidOutcomes",
    "OutcomeReport",
    "RecordedOutcomes",
    "UnknownTargets",
    "read_outcomes",
    "record_outcomes",
]

MAX_OUTCOMES: Final = 10_000
_FIELDS: Final = frozenset({"event_id", "session", "outcome", "quality_score", "task_type"})
_OUTCOMES = Outcome.__table__  # type: ignore[attr-defined]
_EVENTS = EconomicEvent.__table__  # type: ignore[attr-defined]
_SESSIONS = SessionRow.__table__  # type: ignore[attr-defined]


class InvalidOutcomes(ValueError):
    """The batch is malformed; ``problems`` says what is wrong with which item."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (" …" if len(problems) > 20 else ""))
        self.problems = problems


class UnknownTargets(LookupError):
    """Outcomes name events or sessions the tenant does not have."""

    def __init__(self, events: list[str], sessions: list[str]) -> None:
        parts = []
        if events:
            parts.append("unknown event id(s): " + ", ".join(events[:20]))
        if sessions:
            parts.append("unknown session(s): " + ", ".join(sessions[:20]))
        super().__init__("; ".join(parts))
        self.events = events
        self.sessions = sessions


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """One reported outcome, validated."""

    outcome: OutcomeValue
    event_id: str | None = None
    session: str | None = None
    quality_score: float | None = None
    task_type: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedOutcomes:
    accepted: int
    events_updated: int


def _text(item: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    return value


def _report(item: object) -> OutcomeReport:
    if not isinstance(item, dict):
        raise ValueError("an outcome must be a JSON object")
    if unknown := set(item) - _FIELDS:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    event_id = _text(item, "event_id", 64)
    session = _text(item, "session", 200)
    if (event_id is None) == (session is None):
        raise ValueError("name exactly one of event_id and session")
    try:
        outcome = OutcomeValue(str(item.get("outcome")))
    except ValueError:
        raise ValueError(
            f"outcome must be one of {', '.join(o.value for o in OutcomeValue)}"
        ) from None
    score = item.get("quality_score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | Decimal):
            raise ValueError("quality_score must be a number from 0 to 1")
        if not 0 <= score <= 1:
            raise ValueError(f"quality_score {score} is not between 0 and 1")
        score = float(score)
    return OutcomeReport(
        outcome=outcome,
        event_id=event_id,
        session=session,
        quality_score=score,
        task_type=_text(item, "task_type", 200),
    )


def read_outcomes(body: bytes) -> list[OutcomeReport]:
    """The outcomes of a JSON list; raises :class:`InvalidOutcomes` listing every problem."""
    try:
        items = json.loads(body, parse_float=Decimal)
    except ValueError as error:
        raise InvalidOutcomes([f"not JSON: {error}"]) from None
    if not isinstance(items, list) or not items:
        raise InvalidOutcomes(["the body must be a non-empty JSON list of outcomes"])
    if len(items) > MAX_OUTCOMES:
        raise InvalidOutcomes([f"at most {MAX_OUTCOMES} outcomes per request, not {len(items)}"])
    reports: list[OutcomeReport] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            reports.append(_report(item))
        except ValueError as error:
            problems.append(f"outcome {index}: {error}")
    if problems:
        raise InvalidOutcomes(problems)
    return reports


_REPLACED: Final = ("outcome", "quality_score", "task_type", "recorded_ms")


def _row(tenant_id: int, report: OutcomeReport, now_ms: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "event_id": report.event_id,
        "session": report.session,
        "outcome": report.outcome.value,
        "quality_score": report.quality_score,
        "task_type": report.task_type,
        "recorded_ms": now_ms,
    }


def _missing(
    connection: Connection, column: Column[str], tenant_id: int, names: set[str]
) -> list[str]:
    """Which of ``names`` the tenant has no row of (``column`` of a tenant's table)."""
    ordered = sorted(names)
    found: set[str] = set()
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        found.update(
            connection.execute(
                select(column).where(column.table.c.tenant_id == tenant_id, column.in_(chunk))
            ).scalars()
        )
    return sorted(names - found)


def record_outcomes(
    engine: Engine, tenant_id: int, reports: list[OutcomeReport], now_ms: int
) -> RecordedOutcomes:
    """Store the outcomes and set the events' ``outcome``, all in one transaction; raises
    :class:`UnknownTargets` (writing nothing) if any event or session is not the tenant's."""
    # Within one batch the last report for an event or session wins, as across batches.
    by_event = {r.event_id: r for r in reports if r.event_id is not None}
    by_session = {r.session: r for r in reports if r.session is not None}
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    with engine.begin() as connection:
        unknown_events = _missing(connection, _EVENTS.c.event_id, tenant_id, set(by_event))
        unknown_sessions = _missing(connection, _SESSIONS.c.name, tenant_id, set(by_session))
        if unknown_events or unknown_sessions:
            raise UnknownTargets(unknown_events, unknown_sessions)
        for key, targets in (("event_id", by_event), ("session", by_session)):
            if not targets:
                continue
            insert = dialect.insert(_OUTCOMES)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[_OUTCOMES.c.tenant_id, _OUTCOMES.c[key]],
                    set_={name: insert.excluded[name] for name in _REPLACED},
                ),
                [_row(tenant_id, report, now_ms) for report in targets.values()],
            )
        if by_event:
            connection.execute(
                update(_EVENTS)
                .where(
                    _EVENTS.c.tenant_id == tenant_id,
                    _EVENTS.c.event_id == bindparam("target_event"),
                )
                .values(outcome=bindparam("new_outcome")),
                [
                    {"target_event": event_id, "new_outcome": report.outcome.value}
                    for event_id, report in by_event.items()
                ],
            )
        updated = len(by_event)
        has_own = (
            select(_OUTCOMES.c.id)
            .where(
                _OUTCOMES.c.tenant_id == _EVENTS.c.tenant_id,
                _OUTCOMES.c.event_id == _EVENTS.c.event_id,
            )
            .exists()
        )
        for session, report in by_session.items():
            updated += connection.execute(
                update(_EVENTS)
                .where(_EVENTS.c.tenant_id == tenant_id, _EVENTS.c.session == session, ~has_own)
                .values(outcome=report.outcome.value)
            ).rowcount
    return RecordedOutcomes(accepted=len(reports), events_updated=updated)
