"""Anomalous sessions: a session that costs more than 3 times its employee's average session.

The baseline is the mean cost of the employee's *other* sessions that started in the 30
days before this one started, and needs at least :data:`MIN_BASELINE_SESSIONS` of them (an
employee with less history is never flagged). Costs are the sessions' own running totals
(``session.cost_picos``, kept by every ingest); sessions with no priced cost are left out,
both as candidates and from baselines. An anomaly is never blocked:
it is queued for review (``open`` → ``reviewed`` or ``dismissed``), once per session.

The scheduler runs :func:`detect_anomalies` every few seconds. It is incremental: it looks
only at sessions whose events arrived (``session.last_received_ms``) since its previous run,
less an overlap that covers ingest transactions still committing while it ran. A session
that grows more expensive later is looked at again when its new events arrive.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Connection, Engine, RowMapping, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from p402.instrumentation.money import from_picos, usd_str
from p402.ledger.clock import to_iso
from p402.ledger.events import Page
from p402.ledger.models import Anomaly, SchedulerWatermark
from p402.ledger.models import Session as SessionRow
from p402.ledger.paging import newest_first
from p402.ledger.rollups import DAY_MS

__all__ = [
    "ANOMALY_RATIO",
    "BASELINE_DAYS",
    "MIN_BASELINE_SESSIONS",
    "AnomalyStatus",
    "Detection",
    "anomaly_json",
    "detect_anomalies",
    "list_anomalies",
    "review_anomaly",
]

ANOMALY_RATIO: Final = 3
"""A session is anomalous when it costs more than this many times its baseline."""
BASELINE_DAYS: Final = 30
MIN_BASELINE_SESSIONS: Final = 5
"""Fewer priced past sessions than this make no baseline: nothing is flagged."""
RESCAN_MS: Final = 120_000
"""How far before its previous watermark a run looks again, for ingest transactions that
took their ``received_ms`` before the previous run but committed after it."""
WATERMARK: Final = "anomalies"

_ANOMALIES = Anomaly.__table__  # type: ignore[attr-defined]
_SESSIONS = SessionRow.__table__  # type: ignore[attr-defined]
_WATERMARKS = SchedulerWatermark.__table__  # type: ignore[attr-defined]


class AnomalyStatus(StrEnum):
    OPEN = "open"
    REVIEWED = "reviewed"
    DISMISSED = "dismissed"


@dataclass(frozen=True, slots=True)
class Detection:
    """What one run did: sessions looked at, and anomalies newly flagged."""

    examined: int
    flagged: int


def _dialect(connection: Connection) -> Any:
    return sqlite if connection.dialect.name == "sqlite" else postgresql


def _baseline(
    connection: Connection, tenant_id: int, employee: str, session: str, started_ms: int
) -> tuple[int, int]:
    """``(sessions, total cost)`` of the employee's other priced sessions that started in
    the :data:`BASELINE_DAYS` before ``started_ms``."""
    sessions, total = connection.execute(
        select(func.count(), func.sum(_SESSIONS.c.cost_picos)).where(
            _SESSIONS.c.tenant_id == tenant_id,
            _SESSIONS.c.employee == employee,
            _SESSIONS.c.name != session,
            _SESSIONS.c.first_event_ms >= started_ms - BASELINE_DAYS * DAY_MS,
            _SESSIONS.c.first_event_ms < started_ms,
            _SESSIONS.c.cost_picos > 0,
        )
    ).one()
    return int(sessions), int(total or 0)


def _is_anomalous(cost: int, sessions: int, total: int) -> bool:
    # cost > RATIO * (total / sessions), in integers
    return (
        sessions >= MIN_BASELINE_SESSIONS and total > 0 and cost * sessions > ANOMALY_RATIO * total
    )


def detect_anomalies(engine: Engine, now_ms: int) -> Detection:
    """Flag the anomalous sessions among those whose events arrived since the previous run."""
    with engine.begin() as connection:
        watermark = connection.execute(
            select(_WATERMARKS.c.value_ms).where(_WATERMARKS.c.job == WATERMARK)
        ).scalar()
        since = -1 if watermark is None else watermark - RESCAN_MS
        newest = connection.execute(
            select(func.max(_SESSIONS.c.last_received_ms)).where(
                _SESSIONS.c.last_received_ms > since
            )
        ).scalar()
        if newest is None:
            return Detection(0, 0)
        candidates = connection.execute(
            select(
                _SESSIONS.c.tenant_id,
                _SESSIONS.c.name,
                _SESSIONS.c.employee,
                _SESSIONS.c.department,
                _SESSIONS.c.first_event_ms,
                _SESSIONS.c.cost_picos,
            ).where(
                _SESSIONS.c.last_received_ms > since,
                _SESSIONS.c.employee.is_not(None),
                _SESSIONS.c.cost_picos > 0,
                ~select(_ANOMALIES.c.id)
                .where(
                    _ANOMALIES.c.tenant_id == _SESSIONS.c.tenant_id,
                    _ANOMALIES.c.session == _SESSIONS.c.name,
                )
                .exists(),
            )
        ).all()
        flagged = 0
        for candidate in candidates:
            cost = int(candidate.cost_picos)
            sessions, total = _baseline(
                connection,
                candidate.tenant_id,
                candidate.employee,
                candidate.name,
                candidate.first_event_ms,
            )
            if not _is_anomalous(cost, sessions, total):
                continue
            flagged += (
                connection.execute(
                    _dialect(connection)
                    .insert(_ANOMALIES)
                    .values(
                        id="anm_" + secrets.token_hex(8),
                        tenant_id=candidate.tenant_id,
                        session=candidate.name,
                        employee=candidate.employee,
                        department=candidate.department,
                        cost_picos=cost,
                        baseline_picos=(total + sessions // 2) // sessions,
                        baseline_sessions=sessions,
                        detected_ms=now_ms,
                        status=AnomalyStatus.OPEN.value,
                    )
                    .on_conflict_do_nothing()
                    .returning(_ANOMALIES.c.id)
                ).first()
                is not None
            )
        upsert = _dialect(connection).insert(_WATERMARKS).values(job=WATERMARK, value_ms=newest)
        connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[_WATERMARKS.c.job],
                set_={"value_ms": func.max(_WATERMARKS.c.value_ms, upsert.excluded.value_ms)}
                if connection.dialect.name == "sqlite"
                else {"value_ms": func.greatest(_WATERMARKS.c.value_ms, upsert.excluded.value_ms)},
            )
        )
        return Detection(len(candidates), flagged)


def _usd(picos: int) -> str:
    return usd_str(from_picos(picos))


def anomaly_json(row: RowMapping) -> dict[str, Any]:
    """An anomaly as the API shows it (SPEC §9)."""
    ratio = (Decimal(row["cost_picos"]) / Decimal(row["baseline_picos"])).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )
    return {
        "id": row["id"],
        "session": row["session"],
        "employee": row["employee"],
        "department": row["department"],
        "cost_usd": _usd(row["cost_picos"]),
        "baseline_usd": _usd(row["baseline_picos"]),
        "ratio": float(ratio),
        "detected_at": to_iso(row["detected_ms"]),
        "status": row["status"],
        "baseline_sessions": row["baseline_sessions"],
        "note": row["note"],
        "reviewed_at": None if row["reviewed_ms"] is None else to_iso(row["reviewed_ms"]),
    }


def list_anomalies(
    connection: Connection,
    tenant_id: int,
    *,
    status: AnomalyStatus | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """The tenant's anomalies, newest first, optionally only those with ``status``."""
    statement = select(_ANOMALIES).where(_ANOMALIES.c.tenant_id == tenant_id)
    if status is not None:
        statement = statement.where(_ANOMALIES.c.status == status.value)
    return newest_first(
        connection,
        statement,
        time_column=_ANOMALIES.c.detected_ms,
        key_column=_ANOMALIES.c.id,
        limit=limit,
        cursor=cursor,
        render=anomaly_json,
    )


def review_anomaly(
    engine: Engine,
    tenant_id: int,
    anomaly_id: str,
    *,
    status: AnomalyStatus,
    note: str | None,
    reviewer: str,
    now_ms: int,
) -> dict[str, Any] | None:
    """Mark one of the tenant's anomalies ``reviewed`` or ``dismissed`` (again, to change the
    verdict or note); ``None`` for an unknown id or another tenant's."""
    if status is AnomalyStatus.OPEN:
        raise ValueError("a review marks an anomaly reviewed or dismissed")
    mine = and_(_ANOMALIES.c.tenant_id == tenant_id, _ANOMALIES.c.id == anomaly_id)
    with engine.begin() as connection:
        changed = connection.execute(
            update(_ANOMALIES)
            .where(mine)
            .values(status=status.value, note=note, reviewed_ms=now_ms, reviewed_by=reviewer)
        ).rowcount
        if not changed:
            return None
        row = connection.execute(select(_ANOMALIES).where(mine)).mappings().one()
    return anomaly_json(row)
