"""Sealing: turning a session's pending economic events into an immutable receipt.

A session is sealed once idle — no event received for ``P402_RECEIPT_IDLE_SECONDS``
(default 300) — or when closed (``POST /v1/sessions/{id}/close``). Events without a session
are sealed per tenant and UTC day of their timestamp, once none arrived for that day within
the idle time.

**Late events.** Events that arrive for a session after its receipt was sealed are never
added to it (a sealed receipt is immutable): they start a *continuation receipt* of the same
session (``part`` 2, 3, …, with ``continues`` naming the previous receipt of the session),
sealed by the same rules: once the session is idle again, or closed again.

Each sealing is one transaction: the receipt, one leaf per event, the events marked
``sealed`` with their ``receipt_id``, and the session's latest receipt. Concurrent sealers
(the idle job and close requests, on one server or several) take turns per tenant, holding
the tenant's chain lock (:func:`p402.ledger.locks.lock_tenant`) from before they read its
pending events and chain head to their commit; a sealer that waited finds the events sealed
by the one before it. Should two ever overlap all the same, they still cannot seal an event
twice or fork the chain: the event update only takes events still without a receipt and the
chain number is unique per tenant; the loser rolls back and tries again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy import Connection, Engine, RowMapping, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from p402.instrumentation.vocabulary import EvidenceStatus
from p402.ledger.clock import now_ms as clock_now_ms
from p402.ledger.events import EVENTS
from p402.ledger.locks import Locked, lock_tenant
from p402.ledger.models import Session, Tenant
from p402.ledger.rollups import DAY_MS
from p402.settlement import merkle
from p402.settlement.canonical import CanonicalizationError, canonical_bytes
from p402.settlement.receipts import (
    RECEIPT_LEAVES,
    RECEIPTS,
    event_leaf,
    receipt_body,
    receipt_hash,
)

__all__ = [
    "DEFAULT_IDLE_SECONDS",
    "SealedBy",
    "close_session",
    "idle_seconds",
    "seal_idle",
    "seal_session",
]

SESSIONS = Session.__table__  # type: ignore[attr-defined]
TENANTS = Tenant.__table__  # type: ignore[attr-defined]

DEFAULT_IDLE_SECONDS: Final = 300
_log = logging.getLogger(__name__)
_ATTEMPTS: Final = 5


class SealedBy(StrEnum):
    IDLE = "idle"
    CLOSE = "close"


def idle_seconds(environ: Mapping[str, str] | None = None) -> int:
    """``P402_RECEIPT_IDLE_SECONDS``: how long a session stays quiet before it is sealed."""
    env = os.environ if environ is None else environ
    value = env.get("P402_RECEIPT_IDLE_SECONDS") or str(DEFAULT_IDLE_SECONDS)
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"P402_RECEIPT_IDLE_SECONDS must be an integer, not {value!r}") from None
    if seconds < 0:
        raise ValueError("P402_RECEIPT_IDLE_SECONDS must not be negative")
    return seconds


class _Conflict(Exception):
    """Another transaction sealed some of these events first: roll back and look again."""


@dataclass(frozen=True, slots=True)
class _Group:
    """Pending events that one receipt will cover."""

    tenant_id: int
    session: str | None
    day: int | None = None  # the UTC day of the events of a receipt without a session


def _pending_events(connection: Connection, group: _Group) -> Sequence[RowMapping]:
    statement = select(EVENTS).where(
        EVENTS.c.tenant_id == group.tenant_id, EVENTS.c.receipt_id.is_(None)
    )
    if group.session is None:
        assert group.day is not None
        statement = statement.where(
            EVENTS.c.session.is_(None),
            EVENTS.c.ts_ms >= group.day * DAY_MS,
            EVENTS.c.ts_ms < (group.day + 1) * DAY_MS,
        )
    else:
        statement = statement.where(EVENTS.c.session == group.session)
    ordered = statement.order_by(EVENTS.c.ts_ms, EVENTS.c.event_id)
    return connection.execute(ordered).mappings().all()


def _seal_group(
    connection: Connection, group: _Group, *, sealed_by: SealedBy, now_ms: int
) -> str | None:
    events = _pending_events(connection, group)
    if not events:
        return None
    tenant_name = connection.execute(
        select(TENANTS.c.name).where(TENANTS.c.id == group.tenant_id)
    ).scalar_one()
    head = connection.execute(
        select(RECEIPTS.c.seq, RECEIPTS.c.receipt_hash)
        .where(RECEIPTS.c.tenant_id == group.tenant_id)
        .order_by(RECEIPTS.c.seq.desc())
        .limit(1)
    ).first()
    part, continues = 1, None
    if group.session is not None:
        previous = connection.execute(
            select(RECEIPTS.c.id, RECEIPTS.c.part)
            .where(RECEIPTS.c.tenant_id == group.tenant_id, RECEIPTS.c.session == group.session)
            .order_by(RECEIPTS.c.part.desc())
            .limit(1)
        ).first()
        if previous is not None:
            part, continues = previous.part + 1, previous.id

    receipt_id = "rcpt_" + secrets.token_hex(12)
    leaves = [event_leaf(row) for row in events]
    leaf_bytes = [canonical_bytes(leaf) for leaf in leaves]
    leaf_hashes = [hashlib.sha256(data).digest() for data in leaf_bytes]
    events_root = merkle.tree_hash(leaf_hashes).hex()
    body = receipt_body(
        receipt_id=receipt_id,
        tenant=tenant_name,
        sequence=(head.seq + 1) if head else 1,
        previous_receipt_hash=head.receipt_hash if head else None,
        session=group.session,
        part=part,
        continues=continues,
        sealed_ms=now_ms,
        sealed_by=sealed_by.value,
        events=events,
        events_root=events_root,
    )
    connection.execute(
        RECEIPTS.insert().values(
            id=receipt_id,
            tenant_id=group.tenant_id,
            seq=body["sequence"],
            session=group.session,
            part=part,
            first_event_ms=min(row["ts_ms"] for row in events),
            last_event_ms=max(row["ts_ms"] for row in events),
            sealed_ms=now_ms,
            events=len(events),
            body=canonical_bytes(body).decode(),
            receipt_hash=receipt_hash(body),
            previous_hash=body["previous_receipt_hash"],
        )
    )
    connection.execute(
        RECEIPT_LEAVES.insert(),
        [
            {
                "receipt_id": receipt_id,
                "leaf_index": index,
                "tenant_id": group.tenant_id,
                "event_id": row["event_id"],
                "leaf_hash": leaf_hash.hex(),
                "body": data.decode(),
            }
            for index, (row, data, leaf_hash) in enumerate(
                zip(events, leaf_bytes, leaf_hashes, strict=True)
            )
        ],
    )
    marked = connection.execute(
        update(EVENTS)
        .where(EVENTS.c.seq == bindparam("event_seq"), EVENTS.c.receipt_id.is_(None))
        .values(receipt_id=receipt_id, evidence_status=EvidenceStatus.SEALED.value),
        [{"event_seq": row["seq"]} for row in events],
    ).rowcount
    if marked != len(events):
        raise _Conflict
    if group.session is not None:
        connection.execute(
            update(SESSIONS)
            .where(SESSIONS.c.tenant_id == group.tenant_id, SESSIONS.c.name == group.session)
            .values(receipt_id=receipt_id)
        )
    return receipt_id


def _seal(engine: Engine, group: _Group, *, sealed_by: SealedBy, now_ms: int) -> str | None:
    for attempt in range(_ATTEMPTS):
        try:
            with engine.begin() as connection:
                lock_tenant(connection, Locked.RECEIPT_CHAIN, group.tenant_id)
                return _seal_group(connection, group, sealed_by=sealed_by, now_ms=now_ms)
        except (_Conflict, IntegrityError):
            if attempt == _ATTEMPTS - 1:
                raise
    return None  # pragma: no cover - the loop returns or raises


def seal_session(
    engine: Engine,
    tenant_id: int,
    session: str,
    *,
    sealed_by: SealedBy = SealedBy.IDLE,
    now_ms: int | None = None,
) -> str | None:
    """Seal the session's pending events into a receipt; its id, or ``None`` if none was
    pending."""
    stamp = clock_now_ms() if now_ms is None else now_ms
    return _seal(engine, _Group(tenant_id, session), sealed_by=sealed_by, now_ms=stamp)


def close_session(
    engine: Engine, tenant_id: int, session: str, *, now_ms: int | None = None
) -> str | None:
    """Close a session: seal its pending events (idempotent). The id of the session's latest
    receipt; ``None`` when the tenant has no such session."""
    stamp = clock_now_ms() if now_ms is None else now_ms
    with engine.connect() as connection:
        known = connection.execute(
            select(SESSIONS.c.id).where(
                SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.name == session
            )
        ).first()
    if known is None:
        return None
    sealed = _seal(engine, _Group(tenant_id, session), sealed_by=SealedBy.CLOSE, now_ms=stamp)
    with engine.begin() as connection:
        connection.execute(
            update(SESSIONS)
            .where(
                SESSIONS.c.tenant_id == tenant_id,
                SESSIONS.c.name == session,
                SESSIONS.c.closed_ms.is_(None),
            )
            .values(closed_ms=stamp)
        )
        if sealed is not None:
            return sealed
        latest: str | None = connection.execute(
            select(SESSIONS.c.receipt_id).where(
                SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.name == session
            )
        ).scalar_one()
        return latest


def _idle_groups(connection: Connection, cutoff_ms: int) -> list[_Group]:
    pending = (
        select(EVENTS.c.tenant_id, EVENTS.c.session)
        .where(EVENTS.c.receipt_id.is_(None), EVENTS.c.session.is_not(None))
        .distinct()
        .subquery()
    )
    sessions = connection.execute(
        select(SESSIONS.c.tenant_id, SESSIONS.c.name)
        .join(
            pending,
            (pending.c.tenant_id == SESSIONS.c.tenant_id) & (pending.c.session == SESSIONS.c.name),
        )
        .where(SESSIONS.c.last_received_ms <= cutoff_ms)
        .order_by(SESSIONS.c.tenant_id, SESSIONS.c.name)
    ).all()
    day = (EVENTS.c.ts_ms // DAY_MS).label("day")
    days = connection.execute(
        select(EVENTS.c.tenant_id, day)
        .where(EVENTS.c.receipt_id.is_(None), EVENTS.c.session.is_(None))
        .group_by(EVENTS.c.tenant_id, day)
        .having(func.max(EVENTS.c.received_ms) <= cutoff_ms)
        .order_by(EVENTS.c.tenant_id, day)
    ).all()
    return [_Group(row.tenant_id, row.name) for row in sessions] + [
        _Group(row.tenant_id, None, int(row.day)) for row in days
    ]


def seal_idle(
    engine: Engine, *, now_ms: int | None = None, idle_ms: int | None = None
) -> list[str]:
    """Seal every session idle for ``idle_ms`` (default ``P402_RECEIPT_IDLE_SECONDS``), and
    the events without a session of every quiet day; the ids of the new receipts.

    A group whose receipt cannot be written (a figure beyond what RFC 8785 JSON can carry
    exactly, ±(2**53 - 1)) is logged and left pending; the others are sealed all the same."""
    stamp = clock_now_ms() if now_ms is None else now_ms
    quiet = idle_seconds() * 1000 if idle_ms is None else idle_ms
    with engine.connect() as connection:
        groups = _idle_groups(connection, stamp - quiet)
    sealed = []
    for group in groups:
        try:
            receipt_id = _seal(engine, group, sealed_by=SealedBy.IDLE, now_ms=stamp)
        except CanonicalizationError as error:
            what = f"session {group.session!r}" if group.session else f"day {group.day}"
            _log.error("tenant %s: %s cannot be sealed: %s", group.tenant_id, what, error)
            continue
        if receipt_id is not None:
            sealed.append(receipt_id)
    return sealed
