"""Economic events in the ledger: the record the receiver writes, idempotent batch insert,
filtered listing with cursor pagination, and spend aggregation.

The ingest path uses SQLAlchemy Core (one multi-row statement per batch, no ORM object per
event). ``(tenant_id, event_id)`` is unique: a batch delivered again inserts nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, RowMapping, Select, and_, func, or_, select

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.vocabulary import OWNER_DIMENSIONS
from p402.ledger import owners, rollups
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.models import ROLLUP_DIMENSIONS, EconomicEvent, SpendRollup
from p402.ledger.rollups import DAY_MS

__all__ = [
    "EQUALITY_FILTERS",
    "EVENT_FIELDS",
    "GROUP_BY_DIMENSIONS",
    "EventFilter",
    "EventRecord",
    "InvalidCursor",
    "Page",
    "event_json",
    "get_event",
    "insert_events",
    "list_events",
    "spend",
]

EVENTS = EconomicEvent.__table__  # type: ignore[attr-defined]
ROLLUPS = SpendRollup.__table__  # type: ignore[attr-defined]
_ROLLUP_NAMES: Final = frozenset(ROLLUP_DIMENSIONS)
_S = TypeVar("_S", bound=Select[Any])


@dataclass(slots=True)
class EventRecord:
    """One economic event as the receiver hands it to the ledger."""

    event_id: str
    ts_ms: int
    usage_evidence: str
    cost_evidence: str
    privacy_mode: str
    provider: str | None = None
    operation: str | None = None
    model_requested: str | None = None
    model_used: str | None = None
    model_original: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_picos: int | None = None
    client_cost_picos: int | None = None
    cost_mismatch: bool = False
    price_version: str | None = None
    policy_result: str = "allowed"
    policy_reason: str | None = None
    department: str | None = None
    project: str | None = None
    client: str | None = None
    employee: str | None = None
    session: str | None = None
    workflow: str | None = None
    feature: str | None = None
    customer: str | None = None
    task_type: str | None = None
    outcome: str | None = None
    response_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    attempt: int = 0
    status_code: int | None = None
    error_type: str | None = None
    source: str = "p402"
    response_key: str | None = None
    content_input: str | None = None
    content_output: str | None = None
    fingerprint_input: str | None = None
    fingerprint_output: str | None = None
    evidence_status: str = "pending"


_RECORD_FIELDS: Final = tuple(f.name for f in fields(EventRecord))


def insert_events(engine: Engine, tenant_id: int, records: Sequence[EventRecord]) -> int:
    """Write ``records`` for ``tenant_id`` in one transaction; returns how many were new.

    Events already in the ledger (same ``event_id`` for the tenant) are left untouched. A call
    reported both by P402 and by another instrumentation (same ``response_key``) is one
    event: P402's report, which carries owners and evidence, replaces or pre-empts the other
    one; reports of other instrumentations are one event among themselves.
    """
    if not records:
        return 0
    received = now_ms()
    own_keys = {r.response_key for r in records if r.source == "p402" and r.response_key}
    foreign_keys = {r.response_key for r in records if r.source != "p402" and r.response_key}
    batch = uuid.uuid4().hex
    with engine.begin() as connection:
        if own_keys:
            replaced = list(
                connection.execute(
                    select(EVENTS.c.seq).where(
                        EVENTS.c.tenant_id == tenant_id,
                        EVENTS.c.source != "p402",
                        EVENTS.c.response_key.in_(own_keys),
                    )
                ).scalars()
            )
            if replaced:
                rollups.remove_events(connection, tenant_id, replaced)
                connection.execute(EVENTS.delete().where(EVENTS.c.seq.in_(replaced)))
        reported = own_keys
        if foreign_keys - own_keys:
            reported = reported | set(
                connection.execute(
                    select(EVENTS.c.response_key).where(
                        EVENTS.c.tenant_id == tenant_id,
                        EVENTS.c.source == "p402",
                        EVENTS.c.response_key.in_(foreign_keys - own_keys),
                    )
                ).scalars()
            )
        rows = [
            (*_record_values(record), tenant_id, received, batch)
            for record in records
            if record.source == "p402" or record.response_key not in reported
        ]
        if not rows:
            return 0
        if connection.dialect.name == "postgresql":
            inserted = _insert_postgresql(connection, rows)  # rollups and owners included
        else:
            inserted = _insert_sqlite(connection, rows)
            if inserted:
                rollups.add_batch(connection, batch)
                owners.register_batch(connection, batch)
        return inserted


_COLUMNS: Final = (*_RECORD_FIELDS, "tenant_id", "received_ms", "batch")
_record_values = operator.attrgetter(*_RECORD_FIELDS)
_SQLITE_INSERT: Final = (
    f"INSERT INTO economic_event ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT DO NOTHING"
)


def _insert_sqlite(connection: Connection, rows: list[tuple[Any, ...]]) -> int:
    """The driver's own ``executemany`` of one prepared statement, in the same transaction."""
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.executemany(_SQLITE_INSERT, rows)
        return int(cursor.rowcount)
    finally:
        cursor.close()


# PostgreSQL: the rows are COPYed into a temporary table (one per connection, emptied at
# commit; named after its columns so that a new schema gets a new one), then one statement
# inserts them, skipping those already there, and folds exactly the inserted ones into the
# rollups and owner tables (a data-modifying CTE: no second look at economic_event).
_STAGING: Final = "p402_ingest_" + hashlib.sha256(" ".join(_COLUMNS).encode()).hexdigest()[:12]
_PG_STAGING_TABLE: Final = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(_COLUMNS)} FROM economic_event WITH NO DATA"
)
_PG_COPY: Final = f"COPY {_STAGING} ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_FOLDS: Final = (rollups.fold("inserted"), *owners.statements("postgresql", "inserted"))
_PG_INSERT: Final = (
    f"WITH inserted AS (INSERT INTO economic_event ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM {_STAGING} ON CONFLICT DO NOTHING RETURNING *), "
    + ", ".join(f"fold_{n} AS ({statement})" for n, statement in enumerate(_PG_FOLDS))
    + " SELECT count(*) FROM inserted"
)


def _insert_postgresql(connection: Connection, rows: list[tuple[Any, ...]]) -> int:
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_PG_STAGING_TABLE)
        with cursor.copy(_PG_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_PG_INSERT)
        (inserted,) = cursor.fetchone() or (0,)
        return int(inserted)


EVENT_FIELDS: Final = (
    "id",
    "timestamp",
    "provider",
    "operation",
    "model_requested",
    "model_used",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_evidence",
    "usage_evidence",
    "price_version",
    "policy_result",
    "policy_reason",
    "privacy_mode",
    *OWNER_DIMENSIONS,
    "outcome",
    "response_id",
    "trace_id",
    "span_id",
    "attempt",
    "status_code",
    "model_original",
    "receipt_id",
    "evidence_status",
)
"""The fields of an event in the API, in order."""


def _usd(picos: int | None) -> str | None:
    return None if picos is None else usd_str(from_picos(picos))


def event_json(row: RowMapping) -> dict[str, Any]:
    """An event row as the API shows it (SPEC §9)."""
    shown: dict[str, Any] = {}
    for name in EVENT_FIELDS:
        if name == "id":
            shown[name] = row["event_id"]
        elif name == "timestamp":
            shown[name] = to_iso(row["ts_ms"])
        elif name == "cost_usd":
            shown[name] = _usd(row["cost_picos"])
        else:
            shown[name] = row[name]
    shown["client_cost_usd"] = _usd(row["client_cost_picos"])
    shown["original_cost_usd"] = _usd(row["original_cost_picos"])
    shown["original_price_version"] = row["original_price_version"]
    shown["cost_mismatch"] = row["cost_mismatch"]
    shown["error_type"] = row["error_type"]
    return shown


# --- filtering -----------------------------------------------------------------------------

EQUALITY_FILTERS: Final[Mapping[str, str]] = {
    **{dimension: dimension for dimension in OWNER_DIMENSIONS},
    "model": "model_used",
    "model_requested": "model_requested",
    "provider": "provider",
    "operation": "operation",
    "outcome": "outcome",
    "usage_evidence": "usage_evidence",
    "cost_evidence": "cost_evidence",
    "evidence_status": "evidence_status",
    "policy_result": "policy_result",
    "privacy_mode": "privacy_mode",
}
"""Query parameter → column, for the filters that compare for equality."""

GROUP_BY_DIMENSIONS: Final = tuple(EQUALITY_FILTERS)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which of a tenant's events a query covers: equal-to filters and a time range."""

    equals: Mapping[str, str] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None

    def apply(self, statement: _S, tenant_id: int) -> _S:
        conditions = [EVENTS.c.tenant_id == tenant_id]
        for name, value in self.equals.items():
            conditions.append(EVENTS.c[EQUALITY_FILTERS[name]] == value)
        if self.from_ms is not None:
            conditions.append(EVENTS.c.ts_ms >= self.from_ms)
        if self.to_ms is not None:
            conditions.append(EVENTS.c.ts_ms < self.to_ms)
        return statement.where(and_(*conditions))


# --- listing -------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """A pagination cursor that this ledger did not hand out."""


@dataclass(frozen=True, slots=True)
class Page:
    data: list[dict[str, Any]]
    next_cursor: str | None


def _encode_cursor(ts_ms: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{ts_ms}:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts_text, seq_text = text.split(":")
        return int(ts_text), int(seq_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor: {cursor!r}") from None


def list_events(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    *,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """The tenant's matching events, newest first, ``limit`` at a time."""
    statement = event_filter.apply(select(EVENTS), tenant_id)
    if cursor:
        ts_ms, seq = _decode_cursor(cursor)
        statement = statement.where(
            or_(EVENTS.c.ts_ms < ts_ms, and_(EVENTS.c.ts_ms == ts_ms, EVENTS.c.seq < seq))
        )
    statement = statement.order_by(EVENTS.c.ts_ms.desc(), EVENTS.c.seq.desc()).limit(limit + 1)
    rows = connection.execute(statement).mappings().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]["ts_ms"], rows[-1]["seq"])
    return Page([event_json(row) for row in rows], next_cursor)


def get_event(connection: Connection, tenant_id: int, event_id: str) -> dict[str, Any] | None:
    """One of the tenant's events by its id; ``None`` for an unknown id or another tenant's."""
    row = (
        connection.execute(
            select(EVENTS).where(EVENTS.c.tenant_id == tenant_id, EVENTS.c.event_id == event_id)
        )
        .mappings()
        .first()
    )
    return event_json(row) if row else None


# --- spend ---------------------------------------------------------------------------------


def _fits_rollup(event_filter: EventFilter, dimensions: list[str]) -> bool:
    return (
        set(dimensions) <= _ROLLUP_NAMES
        and set(event_filter.equals) <= _ROLLUP_NAMES
        and all(ms is None or ms % DAY_MS == 0 for ms in (event_filter.from_ms, event_filter.to_ms))
    )


def _rollup_spend(
    connection: Connection, tenant_id: int, event_filter: EventFilter, dimensions: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    conditions = [ROLLUPS.c.tenant_id == tenant_id]
    for name, value in event_filter.equals.items():
        conditions.append(ROLLUPS.c[name] == value)
    if event_filter.from_ms is not None:
        conditions.append(ROLLUPS.c.day >= event_filter.from_ms // DAY_MS)
    if event_filter.to_ms is not None:
        conditions.append(ROLLUPS.c.day < event_filter.to_ms // DAY_MS)
    columns = [func.nullif(ROLLUPS.c[name], "").label(name) for name in dimensions]
    measures = [
        func.sum(ROLLUPS.c[name]).label(name)
        for name in ("cost_picos", "events", "input_tokens", "output_tokens", "unpriced_events")
    ]
    statement = select(*columns, *measures).where(and_(*conditions))
    if columns:
        statement = (
            statement.group_by(*(ROLLUPS.c[name] for name in dimensions))
            .having(func.sum(ROLLUPS.c.events) > 0)
            .order_by(func.sum(ROLLUPS.c.cost_picos).desc())
        )
    rows = [_spend_row(row, dimensions) for row in connection.execute(statement).mappings()]
    if not dimensions:
        return rows, rows[0]
    total_row = connection.execute(select(*measures).where(and_(*conditions))).mappings().one()
    return rows, _spend_row(total_row, [])


def spend(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    group_by: Iterable[str],
    *,
    from_rollups: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Cost, event and token totals per combination of ``group_by`` values, plus the total.

    Unpriced events count as events but add no cost; ``unpriced_events`` says how many.
    Questions over whole UTC days and rollup dimensions (owners but workflow, feature,
    customer and task type; provider; model) are answered from the rollup; others, or
    ``from_rollups=False``, from the events themselves.
    """
    dimensions = list(group_by)
    if from_rollups and _fits_rollup(event_filter, dimensions):
        return _rollup_spend(connection, tenant_id, event_filter, dimensions)
    columns = [EVENTS.c[EQUALITY_FILTERS[name]].label(name) for name in dimensions]
    measures = [
        func.sum(EVENTS.c.cost_picos).label("cost_picos"),
        func.count().label("events"),
        func.sum(EVENTS.c.input_tokens).label("input_tokens"),
        func.sum(EVENTS.c.output_tokens).label("output_tokens"),
        func.count().filter(EVENTS.c.cost_picos.is_(None)).label("unpriced_events"),
    ]
    statement = event_filter.apply(select(*columns, *measures), tenant_id)
    if columns:
        statement = statement.group_by(*columns).order_by(func.sum(EVENTS.c.cost_picos).desc())
    rows = [_spend_row(row, dimensions) for row in connection.execute(statement).mappings()]
    if not dimensions:
        return rows, rows[0]
    total = _spend_row(
        connection.execute(event_filter.apply(select(*measures), tenant_id)).mappings().one(), []
    )
    return rows, total


def _spend_row(row: RowMapping, dimensions: list[str]) -> dict[str, Any]:
    shown: dict[str, Any] = {name: row[name] for name in dimensions}
    shown["cost_usd"] = usd_str(from_picos(int(row["cost_picos"] or 0)))
    shown["events"] = int(row["events"] or 0)
    shown["input_tokens"] = int(row["input_tokens"] or 0)
    shown["output_tokens"] = int(row["output_tokens"] or 0)
    shown["unpriced_events"] = int(row["unpriced_events"] or 0)
    return shown
