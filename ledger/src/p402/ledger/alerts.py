"""Budget alerts: 80, 90, 95 and 100 % of a budget's cap reached, or ``projected`` to exceed
it by the end of the period, each at most once per budget scope and period.

The scheduler reads every tenant's budget states and records the thresholds they crossed.
The ``alert`` table's unique key (tenant, scope, name, period, period start, threshold) makes
an alert fire once even when two servers look at the same moment. Recording an alert queues
its notification to each of the tenant's webhooks in the same transaction
(:mod:`p402.ledger.webhooks`). A budget that jumps past several thresholds at once fires
each of them. For :data:`LATE_CROSSINGS_MS` after a period ends, the job also looks at that
period as it ended, so that spend of its last moments (or reported late) still fires its
alerts once the next period has begun.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import Connection, Engine, RowMapping, select
from sqlalchemy.dialects import postgresql, sqlite

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.vocabulary import BudgetPeriod
from p402.ledger import webhooks
from p402.ledger.budgets import budget_states, period_bounds
from p402.ledger.clock import to_iso
from p402.ledger.events import Page
from p402.ledger.models import Alert, Tenant
from p402.ledger.paging import newest_first

__all__ = [
    "LATE_CROSSINGS_MS",
    "PROJECTED",
    "THRESHOLDS",
    "BudgetFigures",
    "Crossing",
    "alert_json",
    "crossings",
    "fire_alerts",
    "list_alerts",
    "record_alert",
]

THRESHOLDS: Final = (80, 90, 95, 100)
"""Percentages of the cap that fire an alert once spent reaches them."""
PROJECTED: Final = "projected"
LATE_CROSSINGS_MS: Final = 3_600_000
"""How long after a period ends the job still looks for its crossings: an hour."""

_ALERTS = Alert.__table__  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


class BudgetFigures(Protocol):
    """What an alert needs of a budget's state for one period."""

    @property
    def scope(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def cap_picos(self) -> int: ...
    @property
    def spent_picos(self) -> int: ...
    @property
    def projected_picos(self) -> int | None: ...
    @property
    def period_start_ms(self) -> int: ...
    @property
    def period_end_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold a budget's period has crossed."""

    scope: str
    name: str
    period: str
    period_start_ms: int
    period_end_ms: int
    threshold: str  # "80", "90", "95", "100" or "projected"
    spent_picos: int
    cap_picos: int
    projected_picos: int | None


def crossings(state: BudgetFigures) -> list[Crossing]:
    """The thresholds ``state`` has crossed: each percentage of the cap that spend reached
    (exactly, in integers), and ``projected`` when the projection exceeds the cap. Under a cap
    of 0 (nothing may be spent), any spend passes every threshold."""
    crossed = [
        str(percent)
        for percent in THRESHOLDS
        if state.spent_picos * 100 >= state.cap_picos * percent
        and (state.cap_picos > 0 or state.spent_picos > 0)
    ]
    if state.projected_picos is not None and state.projected_picos > state.cap_picos:
        crossed.append(PROJECTED)
    return [
        Crossing(
            scope=str(state.scope),
            name=state.name,
            period=str(state.period),
            period_start_ms=state.period_start_ms,
            period_end_ms=state.period_end_ms,
            threshold=threshold,
            spent_picos=state.spent_picos,
            cap_picos=state.cap_picos,
            projected_picos=state.projected_picos,
        )
        for threshold in crossed
    ]


def _usd(picos: int | None) -> str | None:
    return None if picos is None else usd_str(from_picos(picos))


def alert_json(row: RowMapping | dict[str, Any]) -> dict[str, Any]:
    """An alert as the API and the webhooks show it (SPEC §9)."""
    threshold = row["threshold"]
    return {
        "id": row["id"],
        "scope": row["scope"],
        "name": row["name"],
        "period": row["period"],
        "threshold": threshold if threshold == PROJECTED else int(threshold),
        "spent_usd": _usd(row["spent_picos"]),
        "cap_usd": _usd(row["cap_picos"]),
        "projected_usd": _usd(row["projected_picos"]),
        "created_at": to_iso(row["created_ms"]),
        "period_start": to_iso(row["period_start_ms"]),
        "period_end": to_iso(row["period_end_ms"]),
    }


def record_alert(
    connection: Connection, tenant_id: int, crossing: Crossing, now_ms: int
) -> dict[str, Any] | None:
    """Record the alert of ``crossing`` and queue it to the tenant's webhooks, in the caller's
    transaction; ``None`` when this scope, period and threshold has already fired."""
    alert_id = "alt_" + secrets.token_hex(8)
    row: dict[str, Any] = {
        "id": alert_id,
        "tenant_id": tenant_id,
        "scope": crossing.scope,
        "name": crossing.name,
        "period": crossing.period,
        "period_start_ms": crossing.period_start_ms,
        "period_end_ms": crossing.period_end_ms,
        "threshold": crossing.threshold,
        "spent_picos": crossing.spent_picos,
        "cap_picos": crossing.cap_picos,
        "projected_picos": crossing.projected_picos,
        "created_ms": now_ms,
    }
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    fired = connection.execute(
        dialect.insert(_ALERTS).values(**row).on_conflict_do_nothing().returning(_ALERTS.c.id)
    ).first()
    if fired is None:
        return None
    alert = alert_json(row)
    webhooks.enqueue(
        connection, tenant_id, alert_id, {"type": "budget.alert", "alert": alert}, now_ms
    )
    return alert


def list_alerts(
    connection: Connection, tenant_id: int, *, limit: int, cursor: str | None = None
) -> Page:
    """The tenant's alerts, newest first."""
    return newest_first(
        connection,
        select(_ALERTS).where(_ALERTS.c.tenant_id == tenant_id),
        time_column=_ALERTS.c.created_ms,
        key_column=_ALERTS.c.id,
        limit=limit,
        cursor=cursor,
        render=alert_json,
    )


def fire_alerts(engine: Engine, now_ms: int) -> int:
    """The scheduler's job: record every threshold crossed by every tenant's budgets at
    ``now_ms`` that has not fired yet (one transaction per tenant); returns how many fired."""
    with engine.connect() as connection:
        tenants = list(connection.execute(select(_TENANTS.c.id).order_by(_TENANTS.c.id)).scalars())
    earlier = now_ms - LATE_CROSSINGS_MS
    period_ended = any(period_bounds(p, earlier) != period_bounds(p, now_ms) for p in BudgetPeriod)
    fired = 0
    for tenant_id in tenants:
        with engine.begin() as connection:
            states = budget_states(connection, tenant_id, now_ms)
            if period_ended:  # the periods that ended within the hour, as they ended
                states += [
                    state
                    for state in budget_states(connection, tenant_id, earlier)
                    if state.period_end_ms <= now_ms
                ]
            for state in states:
                for crossing in crossings(state):
                    fired += record_alert(connection, tenant_id, crossing, now_ms) is not None
    return fired
