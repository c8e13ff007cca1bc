"""Economic events in the ledger: the record the receiver writes, idempotent batch insert,
filtered listing with cursor pagination, and spend aggregation.

The ingest path uses SQLAlchemy Core (one multi-row statement per batch, no ORM object per
event). ``(tenant_id, event_id)`` is unique: a batch delivered again inserts nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    Table,
    and_,
    collate,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlmodel import SQLModel

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.vocabulary import EVENT_FILTERS, OWNER_DIMENSIONS, EvidenceStatus
from p402.ledger import holds, owners, rollups
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.locks import Locked, lock_tenant
from p402.ledger.models import EconomicEvent, SpendRollup
from p402.ledger.paging import InvalidCursor, Page, decode_cursor, encode_cursor
from p402.ledger.rollups import HOUR_MS

__all__ = [
    "EQUALITY_FILTERS",
    "EVENT_FIELDS",
    "GROUP_BY_DIMENSIONS",
    "HOUR_MS",
    "SPEND_MEASURES",
    "EventFilter",
    "EventRecord",
    "GroupKey",
    "InvalidCursor",
    "Measures",
    "Page",
    "SpendPage",
    "by_cost",
    "cost_rank",
    "event_json",
    "get_event",
    "insert_events",
    "list_events",
    "rollups_for",
    "spend",
    "spend_groups",
    "spend_page",
    "total_of",
]

EVENTS = EconomicEvent.__table__  # type: ignore[attr-defined]
ROLLUPS = SpendRollup.__table__  # type: ignore[attr-defined]
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
    evidence_status: str = EvidenceStatus.PENDING.value


_RECORD_FIELDS: Final = tuple(f.name for f in fields(EventRecord))


def insert_events(engine: Engine, tenant_id: int, records: Sequence[EventRecord]) -> int:
    """Write ``records`` for ``tenant_id`` in one transaction; returns how many were new.

    Events already in the ledger (same ``event_id`` for the tenant) are left untouched. A call
    reported both by P402 and by another instrumentation (same ``response_key``) is one
    event: P402's report, which carries owners and evidence, replaces or pre-empts the other
    one; reports of other instrumentations are one event among themselves. So it stays when
    the reports arrive at once, on one server or several: a batch looks for the other side's
    reports under the tenant's response-keys lock (:mod:`p402.ledger.locks`).
    """
    if not records:
        return 0
    received = now_ms()
    own_keys = {r.response_key for r in records if r.source == "p402" and r.response_key}
    foreign_keys = {r.response_key for r in records if r.source != "p402" and r.response_key}
    batch = uuid.uuid4().hex
    with engine.begin() as connection:
        if own_keys or foreign_keys:
            # Neither side may look for the other's report of a call while it is being
            # written. P402's reports of different calls never meet (their event ids keep
            # them apart): their batches share the lock; one with other reports takes it alone.
            lock_tenant(connection, Locked.RESPONSE_KEYS, tenant_id, shared=not foreign_keys)
        if own_keys:
            replaced = _with_response_keys(connection, "foreign seq", tenant_id, own_keys)
            if replaced:
                rollups.remove_events(connection, tenant_id, replaced)
                connection.execute(EVENTS.delete().where(EVENTS.c.seq.in_(replaced)))
        reported = own_keys
        if foreign_keys - own_keys:
            reported = reported | set(
                _with_response_keys(connection, "own key", tenant_id, foreign_keys - own_keys)
            )
        tail = (tenant_id, received, batch)
        rows = [
            _record_values(record) + tail
            for record in records
            if record.source == "p402" or record.response_key not in reported
        ]
        if not rows:
            return 0
        if connection.dialect.name == "postgresql":
            inserted = _insert_postgresql(connection, rows)  # rollups and owners included
        else:
            inserted = _insert_sqlite(connection, rows)
            if inserted == len(rows):  # every row is new: summed from the rows at hand
                rollups.add_rows(connection, rows, _COLUMNS)
                owners.register_rows(connection, rows, _COLUMNS)
            elif inserted:  # some were there already: the ones written, by their batch
                rollups.add_batch(connection, batch)
                owners.register_batch(connection, batch)
        holds.release_batch(connection, tenant_id, batch)
        return inserted


# One query by a set of response keys, bound as one parameter (a JSON array: cheaper to
# pass than a thousand parameters, or than an array psycopg builds): the seq of other
# instrumentations' reports (through their partial unique index), or the keys P402 itself
# reported.
_BY_RESPONSE_KEYS: Final = {
    (dialect, wanted): (
        f"SELECT {column} FROM economic_event WHERE tenant_id = {mark} AND source {source} "
        f"AND response_key {keys}"
    )
    for dialect, mark, keys in (
        ("sqlite", "?", "IN (SELECT value FROM json_each(?))"),
        ("postgresql", "%s", "= ANY(ARRAY(SELECT json_array_elements_text(%s::json)))"),
    )
    for wanted, column, source in (
        ("foreign seq", "seq", "!= 'p402'"),
        ("own key", "response_key", "= 'p402'"),
    )
}


def _with_response_keys(
    connection: Connection, wanted: str, tenant_id: int, keys: set[str]
) -> list[Any]:
    values = json.dumps(sorted(keys), ensure_ascii=False)
    statement = _BY_RESPONSE_KEYS[connection.dialect.name, wanted]
    result = connection.exec_driver_sql(statement, (tenant_id, values))
    return list(result.scalars())


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
_PG_FOLDS: Final = (*rollups.folds("inserted"), *owners.statements("postgresql", "inserted"))
_PG_FOLDED: Final = (
    "tenant_id",
    "ts_ms",
    "received_ms",
    "department",
    "project",
    "client",
    "employee",
    "session",
    "provider",
    "model_used",
    "cost_picos",
    "input_tokens",
    "output_tokens",
)
"""The columns the folds read of the inserted rows (returned, rather than whole rows; one
they read and this lacks fails the statement)."""
_PG_INSERT: Final = (
    f"WITH inserted AS (INSERT INTO economic_event ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM {_STAGING} ON CONFLICT DO NOTHING "
    f"RETURNING {', '.join(_PG_FOLDED)}), "
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
    name: "model_used" if name == "model" else name for name in EVENT_FILTERS
}
"""Query parameter → column, for the filters that compare for equality."""

GROUP_BY_DIMENSIONS: Final = tuple(EQUALITY_FILTERS)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which of a tenant's events a query covers: equal-to filters, filters that want a value
    present (any value), and a time range."""

    equals: Mapping[str, str] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None
    present: frozenset[str] = frozenset()

    def apply(self, statement: _S, tenant_id: int) -> _S:
        conditions = [EVENTS.c.tenant_id == tenant_id]
        for name, value in self.equals.items():
            conditions.append(EVENTS.c[EQUALITY_FILTERS[name]] == value)
        for name in self.present:
            conditions.append(EVENTS.c[EQUALITY_FILTERS[name]].is_not(None))
        if self.from_ms is not None:
            conditions.append(EVENTS.c.ts_ms >= self.from_ms)
        if self.to_ms is not None:
            conditions.append(EVENTS.c.ts_ms < self.to_ms)
        return statement.where(and_(*conditions))


# --- listing -------------------------------------------------------------------------------


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

SPEND_MEASURES: Final = ("cost_picos", "events", "input_tokens", "output_tokens", "unpriced_events")

GroupKey: TypeAlias = tuple[Any, ...]
"""A group of a spend question: its bucket's start (epoch ms) when bucketed, then the values
of its dimensions in the order asked (``None`` for a missing value)."""


@dataclass(slots=True)
class Measures:
    """Spend figures of a set of events: cost in picodollars (unpriced events add none), how
    many events and how many of them unpriced, input and output tokens."""

    cost_picos: int = 0
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unpriced_events: int = 0

    @classmethod
    def of(cls, values: Sequence[Any]) -> Measures:
        """From the :data:`SPEND_MEASURES` columns of a row (SQL ``NULL`` sums are 0)."""
        return cls(*(int(value or 0) for value in values))

    def add(self, other: Measures, sign: int = 1) -> None:
        """Add (``sign`` 1) or take out (``sign`` -1) ``other``'s figures."""
        self.cost_picos += sign * other.cost_picos
        self.events += sign * other.events
        self.input_tokens += sign * other.input_tokens
        self.output_tokens += sign * other.output_tokens
        self.unpriced_events += sign * other.unpriced_events

    @property
    def priced_events(self) -> int:
        return self.events - self.unpriced_events

    def json(self) -> dict[str, Any]:
        """As the API shows them: ``cost_usd`` a decimal string, then the counts."""
        return {
            "cost_usd": usd_str(from_picos(self.cost_picos)),
            "events": self.events,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "unpriced_events": self.unpriced_events,
        }


def total_of(groups: Iterable[Measures]) -> Measures:
    """The sum of ``groups``' figures."""
    total = Measures()
    for measures in groups:
        total.add(measures)
    return total


class _Rung(NamedTuple):
    """One rollup table of a ladder: its time column and that column's period."""

    table: Table
    period: str
    period_ms: int


_LADDERS: Final[tuple[tuple[frozenset[str], tuple[_Rung, ...]], ...]] = tuple(
    (
        frozenset(dimensions),
        tuple(
            _Rung(SQLModel.metadata.tables[r.table], r.period, r.period_ms)
            for r in sorted(rollups.ROLLUP_TABLES, key=lambda r: -r.period_ms)
            if r.dimensions == dimensions
        ),
    )
    for dimensions in sorted({r.dimensions for r in rollups.ROLLUP_TABLES}, key=len)
)
"""Per set of rollup dimensions (the smallest sets first), its rollup tables from the longest
period to the shortest."""


def rollups_for(event_filter: EventFilter, dimensions: Iterable[str]) -> tuple[_Rung, ...]:
    """The rollup tables (longest period first) of the smallest rollup that holds the
    dimensions and filters of a question; none if none does. (Any time range is answerable:
    see :func:`spend_groups`.)"""
    needed = set(dimensions) | set(event_filter.equals) | event_filter.present
    for names, ladder in _LADDERS:
        if needed <= names:
            return ladder
    return ()


@dataclass(frozen=True, slots=True)
class _Part:
    """A part of a time range to add (``sign`` 1) or take out (-1): whole periods of
    ``period_ms`` from a rollup, or (``period_ms`` ``None``) the events themselves."""

    sign: int
    period_ms: int | None
    from_ms: int | None
    to_ms: int | None


def _past_span(from_ms: int, to_ms: int, now: int) -> int:
    """How much of ``[from_ms, to_ms)`` lies before ``now``: a guess of how many events it
    holds (none are expected in the future)."""
    return max(0, min(to_ms, now) - from_ms)


def _align(
    bound: int | None, period_ms: int, now: int, *, lower: bool
) -> tuple[int | None, tuple[int, int, int] | None]:
    """A bound moved to a period boundary, and the edge ``(sign, from, to)`` that makes up
    for the move: whichever neighbouring boundary leaves the edge with fewer events."""
    if bound is None or bound % period_ms == 0:
        return bound, None
    floor = bound - bound % period_ms
    ceiling = floor + period_ms
    if lower:  # [bound, …): start later and add [bound, ceiling), or earlier and take out
        if _past_span(bound, ceiling, now) <= _past_span(floor, bound, now):
            return ceiling, (1, bound, ceiling)
        return floor, (-1, floor, bound)
    if _past_span(floor, bound, now) <= _past_span(bound, ceiling, now):
        return floor, (1, floor, bound)
    return ceiling, (-1, bound, ceiling)


def _plan(
    sign: int, from_ms: int | None, to_ms: int | None, periods: Sequence[int], now: int
) -> list[_Part]:
    """Parts whose signed sum is exactly ``[from_ms, to_ms)``: whole periods of the longest
    period, the edges left at either end in periods of the next one, and so on down to the
    events."""
    if not periods:
        return [_Part(sign, None, from_ms, to_ms)]
    period_ms, shorter = periods[0], periods[1:]
    start, start_edge = _align(from_ms, period_ms, now, lower=True)
    end, end_edge = _align(to_ms, period_ms, now, lower=False)
    if start is not None and end is not None and start > end:  # shorter than a period here
        return _plan(sign, from_ms, to_ms, shorter, now)
    parts = [_Part(sign, period_ms, start, end)]
    for edge in (start_edge, end_edge):
        if edge is not None:
            edge_sign, edge_from, edge_to = edge
            parts.extend(_plan(sign * edge_sign, edge_from, edge_to, shorter, now))
    return parts


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _collect(
    groups: dict[GroupKey, Measures], rows: Iterable[Sequence[Any]], width: int, sign: int = 1
) -> None:
    """Add rows of ``width`` key columns then :data:`SPEND_MEASURES` to ``groups``."""
    for row in rows:
        key = tuple(_blank_is_none(value) for value in row[:width])
        measures = groups.get(key)
        if measures is None:
            measures = groups[key] = Measures()
        measures.add(Measures.of(row[width:]), sign)


def _event_groups(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    bucket_ms: int | None,
    groups: dict[GroupKey, Measures],
    sign: int = 1,
) -> None:
    keys: list[Any] = []
    if bucket_ms is not None:
        unit = literal_column(str(int(bucket_ms)), BigInteger())
        keys.append(EVENTS.c.ts_ms // unit * unit)
    keys.extend(EVENTS.c[EQUALITY_FILTERS[name]] for name in dimensions)
    measures = [
        func.sum(EVENTS.c.cost_picos),
        func.count(),
        func.sum(EVENTS.c.input_tokens),
        func.sum(EVENTS.c.output_tokens),
        func.count().filter(EVENTS.c.cost_picos.is_(None)),
    ]
    statement = event_filter.apply(select(*keys, *measures), tenant_id)
    if keys:
        statement = statement.group_by(*keys)
    _collect(groups, connection.execute(statement), len(keys), sign)


def _rollup_conditions(rollup: _Rung, tenant_id: int, event_filter: EventFilter) -> Any:
    """The rows of ``rollup`` that hold the tenant's events matching ``event_filter`` (whose
    range is whole periods of the rollup)."""
    table, period, period_ms = rollup
    time = table.c[period]
    conditions = [table.c.tenant_id == tenant_id]
    for name, value in event_filter.equals.items():
        conditions.append(table.c[name] == value)
    for name in event_filter.present:
        conditions.append(table.c[name] != "")
    if event_filter.from_ms is not None:
        conditions.append(time >= event_filter.from_ms // period_ms)
    if event_filter.to_ms is not None:
        conditions.append(time < event_filter.to_ms // period_ms)
    return and_(*conditions)


def _rollup_groups(
    connection: Connection,
    rollup: _Rung,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    bucket_ms: int | None,
    groups: dict[GroupKey, Measures],
    sign: int,
) -> None:
    table, period, period_ms = rollup
    time = table.c[period]
    keys: list[Any] = [time] if bucket_ms is not None else []
    keys.extend(table.c[name] for name in dimensions)
    statement = select(*keys, *(func.sum(table.c[name]) for name in SPEND_MEASURES)).where(
        _rollup_conditions(rollup, tenant_id, event_filter)
    )
    if keys:
        statement = statement.group_by(*keys)
    rows: Iterable[Sequence[Any]] = connection.execute(statement)
    if bucket_ms is not None:  # a period's start, then the start of its bucket
        rows = ((row[0] * period_ms - row[0] * period_ms % bucket_ms, *row[1:]) for row in rows)
    _collect(groups, rows, len(keys), sign)


def spend_groups(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    *,
    bucket_ms: int | None = None,
    from_rollups: bool = True,
) -> dict[GroupKey, Measures]:
    """The spend figures of every group of the tenant's matching events that has any.

    Groups are the combinations of ``dimensions`` values (a missing or empty value is
    ``None``), and with ``bucket_ms`` (:data:`HOUR_MS` or :data:`~p402.ledger.rollups.DAY_MS`)
    also the UTC hour or day, whose start leads the key.

    Questions whose dimensions and filters a rollup holds (department, project, client,
    employee, provider, model) are answered from the smallest such rollup: its whole days,
    the part-days at either end of the range from its hours where it has them, and only the
    rest from the events (at each end, whichever side of the boundary holds fewer events is
    read, and added or taken out). Others, or ``from_rollups=False``, are answered from the
    events.
    """
    groups: dict[GroupKey, Measures] = {}
    ladder = rollups_for(event_filter, dimensions) if from_rollups else ()
    if bucket_ms is not None:  # only periods that fit in a bucket
        ladder = tuple(rung for rung in ladder if bucket_ms % rung.period_ms == 0)
    from_ms, to_ms = event_filter.from_ms, event_filter.to_ms
    if not ladder or (from_ms is not None and to_ms is not None and from_ms >= to_ms):
        _event_groups(connection, tenant_id, event_filter, dimensions, bucket_ms, groups)
    else:
        by_period = {rung.period_ms: rung for rung in ladder}
        for part in _plan(1, from_ms, to_ms, list(by_period), now_ms()):
            ranged = replace(event_filter, from_ms=part.from_ms, to_ms=part.to_ms)
            if part.period_ms is None:
                _event_groups(
                    connection, tenant_id, ranged, dimensions, bucket_ms, groups, part.sign
                )
            else:
                _rollup_groups(
                    connection,
                    by_period[part.period_ms],
                    tenant_id,
                    ranged,
                    dimensions,
                    bucket_ms,
                    groups,
                    part.sign,
                )
    return {key: measures for key, measures in groups.items() if measures.events}


def cost_rank(item: tuple[GroupKey, Measures]) -> tuple[int, int, tuple[str, ...]]:
    """Where a group stands in :func:`by_cost`'s order: most costly first, then most events,
    then by its values."""
    key, measures = item
    return (-measures.cost_picos, -measures.events, tuple(map(str, key)))


def by_cost(groups: Mapping[GroupKey, Measures]) -> list[tuple[GroupKey, Measures]]:
    """The groups, most costly first (then most events, then by their values)."""
    return sorted(groups.items(), key=cost_rank)


# A page of the groups, most costly first, ordered and cut in SQL: the signed parts of the
# range (rollup periods and events, as planned for :func:`spend_groups`) are one UNION ALL,
# summed per group; a missing value is '' throughout (events' NULL and '' are one group).

_BLANK: Final[ColumnElement[str]] = literal_column("''")


def _signed(expression: Any, sign: int) -> Any:
    return expression if sign == 1 else -expression


def _event_part(
    tenant_id: int, event_filter: EventFilter, dimensions: Sequence[str], sign: int
) -> Select[Any]:
    keys = [
        func.coalesce(EVENTS.c[EQUALITY_FILTERS[name]], _BLANK).label(f"d{n}")
        for n, name in enumerate(dimensions)
    ]
    measures = (
        func.sum(EVENTS.c.cost_picos),
        func.count(),
        func.sum(EVENTS.c.input_tokens),
        func.sum(EVENTS.c.output_tokens),
        func.count().filter(EVENTS.c.cost_picos.is_(None)),
    )
    statement = event_filter.apply(
        select(
            *keys,
            *(
                _signed(measure, sign).label(name)
                for name, measure in zip(SPEND_MEASURES, measures, strict=True)
            ),
        ),
        tenant_id,
    )
    return statement.group_by(*keys)


def _rollup_part(
    rollup: _Rung,
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    sign: int,
) -> Select[Any]:
    table = rollup.table
    keys = [table.c[name].label(f"d{n}") for n, name in enumerate(dimensions)]
    measures = (_signed(func.sum(table.c[name]), sign).label(name) for name in SPEND_MEASURES)
    statement = select(*keys, *measures).where(_rollup_conditions(rollup, tenant_id, event_filter))
    return statement.group_by(*keys)


def _spend_parts(
    tenant_id: int,
    event_filter: EventFilter,
    dimensions: Sequence[str],
    from_rollups: bool,
) -> list[Select[Any]]:
    """Statements whose rows, summed per group, are the spend of every group (the same
    plan as :func:`spend_groups`)."""
    ladder = rollups_for(event_filter, dimensions) if from_rollups else ()
    from_ms, to_ms = event_filter.from_ms, event_filter.to_ms
    if not ladder or (from_ms is not None and to_ms is not None and from_ms >= to_ms):
        return [_event_part(tenant_id, event_filter, dimensions, 1)]
    by_period = {rung.period_ms: rung for rung in ladder}
    parts: list[Select[Any]] = []
    for part in _plan(1, from_ms, to_ms, list(by_period), now_ms()):
        ranged = replace(event_filter, from_ms=part.from_ms, to_ms=part.to_ms)
        if part.period_ms is None:
            parts.append(_event_part(tenant_id, ranged, dimensions, part.sign))
        else:
            rung = by_period[part.period_ms]
            parts.append(_rollup_part(rung, tenant_id, ranged, dimensions, part.sign))
    return parts


def _after(columns: Sequence[Any], values: Sequence[str]) -> Any:
    """``columns`` come after ``values`` in ascending order, compared left to right."""
    first = columns[0] > values[0]
    if len(columns) == 1:
        return first
    return or_(first, and_(columns[0] == values[0], _after(columns[1:], values[1:])))


def _spend_position(cursor: str, width: int) -> tuple[int, list[str]]:
    """The cost and group values of the last row of a page, from its ``next_cursor``."""
    cost_picos, key = decode_cursor(cursor)
    try:
        values = json.loads(key)
    except ValueError:
        values = None
    if (
        not 0 <= cost_picos < 2**63
        or not isinstance(values, list)
        or len(values) != width
        or not all(isinstance(value, str) and _storable(value) for value in values)
    ):
        raise InvalidCursor(f"invalid cursor: {cursor!r}")
    return cost_picos, values


def _storable(text: str) -> bool:
    """Whether ``text`` could be a stored value (UTF-8, no NUL)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@dataclass(frozen=True, slots=True)
class SpendPage:
    """Rows of a spend question (the groups, most costly first), the cursor that continues
    them (``None`` on the last page) and the total of every group."""

    data: list[dict[str, Any]]
    next_cursor: str | None
    total: dict[str, Any]


def spend_page(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    group_by: Iterable[str],
    *,
    limit: int | None = None,
    cursor: str | None = None,
    from_rollups: bool = True,
) -> SpendPage:
    """Cost, event and token totals per combination of ``group_by`` values (see
    :func:`spend_groups`), ``limit`` groups at a time after ``cursor`` (all with no
    ``limit``): most costly first, groups of equal cost in the byte order of their values (a
    missing value first). ``total`` covers every group. Raises :class:`InvalidCursor` for a
    cursor that is not a ``next_cursor`` of the same ``group_by``.

    Unpriced events count as events but add no cost; ``unpriced_events`` says how many.
    """
    dimensions = list(group_by)
    width = len(dimensions)
    position = _spend_position(cursor, width) if cursor else None
    if not dimensions:
        total = _total(connection, tenant_id, event_filter, from_rollups)
        return SpendPage([total], None, total)
    parts = _spend_parts(tenant_id, event_filter, dimensions, from_rollups)
    united = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("parts")
    keys = [united.c[f"d{n}"] for n in range(width)]
    groups = (
        select(
            *keys,
            *(func.coalesce(func.sum(united.c[name]), 0).label(name) for name in SPEND_MEASURES),
        )
        .group_by(*keys)
        .having(func.sum(united.c.events) != 0)
        .subquery("groups")
    )
    # every group's figures beside the total of all groups, before any is left out
    ranked = select(
        groups, *(func.sum(groups.c[name]).over().label(f"all_{name}") for name in SPEND_MEASURES)
    ).subquery("ranked")
    cost = ranked.c.cost_picos
    values: list[ColumnElement[Any]] = [ranked.c[f"d{n}"] for n in range(width)]
    if connection.dialect.name == "postgresql":  # byte order, as on SQLite
        values = [collate(value, "C") for value in values]
    statement = select(ranked).order_by(cost.desc(), *values)
    if position is not None:
        after_cost, after_values = position
        statement = statement.where(
            or_(cost < after_cost, and_(cost == after_cost, _after(values, after_values)))
        )
    if limit is not None:
        statement = statement.limit(limit + 1)
    rows = connection.execute(statement).all()
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        last = list(rows[-1][:width])
        next_cursor = encode_cursor(
            int(rows[-1].cost_picos), json.dumps(last, separators=(",", ":"))
        )
    measured = width + len(SPEND_MEASURES)
    data = [
        {
            **{name: _blank_is_none(value) for name, value in zip(dimensions, row, strict=False)},
            **Measures.of(row[width:measured]).json(),
        }
        for row in rows
    ]
    if rows:
        total = Measures.of(rows[0][measured:]).json()
    else:  # a page past the last group
        total = _total(connection, tenant_id, event_filter, from_rollups)
    return SpendPage(data, next_cursor, total)


def _total(
    connection: Connection, tenant_id: int, event_filter: EventFilter, from_rollups: bool
) -> dict[str, Any]:
    groups = spend_groups(connection, tenant_id, event_filter, [], from_rollups=from_rollups)
    return total_of(groups.values()).json()


def spend(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    group_by: Iterable[str],
    *,
    from_rollups: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every group of a spend question, most costly first, plus the total (see
    :func:`spend_page`)."""
    page = spend_page(connection, tenant_id, event_filter, group_by, from_rollups=from_rollups)
    return page.data, page.total
