"""The session log: a tenant's sessions, most costly first, from the ``session`` table.

Every ingest keeps each session's time span and cost in ``session`` (see
:mod:`p402.ledger.owners`), so ranking sessions reads one row per session, never the
events. Only the sessions of the page answered are then counted in the events (their
events, tokens and unpriced events, through the ``(tenant_id, session)`` index).

A session is in a time range when its span ``[first event, last event]`` meets it; its
figures are those of the whole session, as its receipt states them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Connection, and_, func, or_, select

from p402.instrumentation.money import from_picos, usd_str
from p402.ledger.clock import to_iso
from p402.ledger.events import EVENTS
from p402.ledger.models import Session, SettlementBatch, SettlementLeaf, receipt_status
from p402.ledger.paging import InvalidCursor, Page, decode_cursor, encode_cursor

__all__ = ["SESSION_FILTERS", "list_sessions"]

SESSIONS = Session.__table__  # type: ignore[attr-defined]
_LEAVES = SettlementLeaf.__table__  # type: ignore[attr-defined]
_BATCHES = SettlementBatch.__table__  # type: ignore[attr-defined]
SESSION_FILTERS: Final = ("department", "employee")
"""The owners a session log can be narrowed to (those a session row keeps)."""
_MAX_PICOS: Final = 2**63


def _position(cursor: str) -> tuple[int, str]:
    cost_picos, name = decode_cursor(cursor)
    if not 0 <= cost_picos < _MAX_PICOS or "\x00" in name:
        raise InvalidCursor(f"invalid cursor: {cursor!r}")
    return cost_picos, name


def _counts(connection: Connection, tenant_id: int, names: list[str]) -> dict[str, Any]:
    """Events, tokens and unpriced events of each of the sessions ``names``."""
    if not names:
        return {}
    rows = connection.execute(
        select(
            EVENTS.c.session,
            func.count(),
            func.coalesce(func.sum(EVENTS.c.input_tokens), 0),
            func.coalesce(func.sum(EVENTS.c.output_tokens), 0),
            func.count() - func.count(EVENTS.c.cost_picos),
        )
        .where(EVENTS.c.tenant_id == tenant_id, EVENTS.c.session.in_(names))
        .group_by(EVENTS.c.session)
    )
    return {row[0]: row[1:] for row in rows}


def _receipt_statuses(connection: Connection, receipt_ids: list[str]) -> dict[str, str]:
    """The status of each of the receipts ``receipt_ids`` (see :func:`receipt_status`)."""
    if not receipt_ids:
        return {}
    rows = connection.execute(
        select(_LEAVES.c.receipt_id, _BATCHES.c.state)
        .join(_BATCHES, _BATCHES.c.id == _LEAVES.c.batch_id)
        .where(_LEAVES.c.receipt_id.in_(receipt_ids))
    )
    states = {receipt_id: state for receipt_id, state in rows}
    return {receipt_id: receipt_status(states.get(receipt_id)) for receipt_id in receipt_ids}


def list_sessions(
    connection: Connection,
    tenant_id: int,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    owners: Mapping[str, str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """The tenant's sessions that meet ``[from_ms, to_ms)``, most costly first (equal costs
    by name), ``limit`` at a time after ``cursor``; ``owners`` narrows them to a department
    or employee. Raises :class:`InvalidCursor` for a cursor this list did not hand out."""
    conditions = [SESSIONS.c.tenant_id == tenant_id]
    if from_ms is not None:
        conditions.append(SESSIONS.c.last_event_ms >= from_ms)
    if to_ms is not None:
        conditions.append(SESSIONS.c.first_event_ms < to_ms)
    for name, value in (owners or {}).items():
        if name not in SESSION_FILTERS:
            raise ValueError(f"sessions cannot be filtered by {name}")
        conditions.append(SESSIONS.c[name] == value)
    cost, name = SESSIONS.c.cost_picos, SESSIONS.c.name
    if cursor:
        after_cost, after_name = _position(cursor)
        conditions.append(or_(cost < after_cost, and_(cost == after_cost, name > after_name)))
    rows = (
        connection.execute(
            select(SESSIONS).where(and_(*conditions)).order_by(cost.desc(), name).limit(limit + 1)
        )
        .mappings()
        .all()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(int(rows[-1]["cost_picos"]), rows[-1]["name"])
    counts = _counts(connection, tenant_id, [row["name"] for row in rows])
    statuses = _receipt_statuses(
        connection, [row["receipt_id"] for row in rows if row["receipt_id"]]
    )
    data = []
    for row in rows:
        events, input_tokens, output_tokens, unpriced = counts.get(row["name"], (0, 0, 0, 0))
        data.append(
            {
                "session": row["name"],
                "department": row["department"],
                "employee": row["employee"],
                "first_event_at": to_iso(row["first_event_ms"]),
                "last_event_at": to_iso(row["last_event_ms"]),
                "cost_usd": usd_str(from_picos(int(row["cost_picos"]))),
                "events": int(events),
                "input_tokens": int(input_tokens),
                "output_tokens": int(output_tokens),
                "unpriced_events": int(unpriced),
                "closed": row["closed_ms"] is not None,
                "receipt_id": row["receipt_id"],
                "receipt_status": statuses.get(row["receipt_id"]),
            }
        )
    return Page(data, next_cursor)
