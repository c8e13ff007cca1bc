"""Spend rollups: per tenant, UTC day (or hour), owners, provider and model.

Three are kept (:data:`ROLLUP_TABLES`): ``spend_rollup`` per day by department, project,
client, employee, provider and model; ``project_spend_rollup`` per day by the same but the
employee (a few hundred rows a day where the first has thousands, for organisation-wide
questions); and ``project_spend_rollup_hourly``, the same per hour, for the part-days at the
ends of a range. Every ingest transaction folds exactly the rows it wrote (selected by their
``batch``) into each with one ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE`` — or, when
every row it was handed is new, sums them in Python and upserts the sums with one
``executemany`` per rollup (:func:`add_rows`) — and takes out the rows it replaced, so the
rollups are exact under concurrent ingest and never need a rebuild. Spend questions over
rollup dimensions are answered from the smallest rollups that hold them
(:func:`p402.ledger.events.spend_groups`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, TextClause, bindparam, text

from p402.ledger.models import PROJECT_ROLLUP_DIMENSIONS, ROLLUP_DIMENSIONS
from p402.ledger.owners import BATCH_ROWS

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "ROLLUP_TABLES",
    "Rollup",
    "add_batch",
    "add_events",
    "add_rows",
    "fold",
    "folds",
    "remove_events",
]

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class Rollup:
    """A rollup table: its time column (``day`` or ``hour`` since the epoch, UTC), how long
    that period is, and its dimensions (a missing value is '')."""

    table: str
    period: str
    period_ms: int
    dimensions: tuple[str, ...]


ROLLUP_TABLES: Final = (
    Rollup("spend_rollup", "day", DAY_MS, ROLLUP_DIMENSIONS),
    Rollup("project_spend_rollup", "day", DAY_MS, PROJECT_ROLLUP_DIMENSIONS),
    Rollup("project_spend_rollup_hourly", "hour", HOUR_MS, PROJECT_ROLLUP_DIMENSIONS),
)
"""Every rollup the ingest keeps."""
_BY_TABLE: Final = {rollup.table: rollup for rollup in ROLLUP_TABLES}
_MEASURES: Final = ("cost_picos", "events", "input_tokens", "output_tokens", "unpriced_events")
_SOURCE_COLUMNS: Final = {
    "department": "department",
    "project": "project",
    "client": "client",
    "employee": "employee",
    "provider": "provider",
    "model": "model_used",
}
_AGGREGATES: Final = (
    "COALESCE(SUM(cost_picos), 0), COUNT(*), COALESCE(SUM(input_tokens), 0), "
    "COALESCE(SUM(output_tokens), 0), COUNT(*) - COUNT(cost_picos)"
)


def fold(rows: str, sign: str = "+", table: str = "spend_rollup") -> str:
    """The statement that adds (``sign`` ``+``) or takes out (``-``) ``rows`` (a relation of
    economic events, e.g. a CTE of freshly inserted ones) to or from the rollup ``table``."""
    rollup = _BY_TABLE[table]
    key = ", ".join(("tenant_id", rollup.period, *rollup.dimensions))
    grouped = ", ".join(
        (
            "tenant_id",
            f"ts_ms / {rollup.period_ms}",
            *(f"COALESCE({_SOURCE_COLUMNS[d]}, '')" for d in rollup.dimensions),
        )
    )
    updates = ", ".join(f"{m} = {table}.{m} {sign} excluded.{m}" for m in _MEASURES)
    return (
        f"INSERT INTO {table} ({key}, {', '.join(_MEASURES)}) "
        f"SELECT {grouped}, {_AGGREGATES} FROM {rows} "
        f"GROUP BY {grouped} "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


def folds(rows: str, sign: str = "+") -> tuple[str, ...]:
    """The statements that add or take out ``rows`` to or from every rollup (see
    :func:`fold`): all of them must run, in one transaction."""
    return tuple(fold(rows, sign, rollup.table) for rollup in ROLLUP_TABLES)


def _apply(
    sign: str,
    connection: Connection,
    tenant_id: int,
    where: str,
    params: dict[str, Any],
    expanding: tuple[str, ...] = (),
) -> None:
    # PostgreSQL: the rows locked as they are read. A transaction that changes or deletes
    # them after this (and commits) is waited for, and its rows then read as they became,
    # so that two transactions never both take out or add the same row.
    lock = " FOR UPDATE" if connection.dialect.name == "postgresql" else ""
    rows = (
        f"(SELECT * FROM economic_event WHERE tenant_id = :rollup_tenant AND ({where}){lock}) AS e"
    )
    for fold_statement in folds(rows, sign):
        statement = text(fold_statement)
        if expanding:
            statement = statement.bindparams(
                *(bindparam(name, expanding=True) for name in expanding)
            )
        connection.execute(statement, {**params, "rollup_tenant": tenant_id})


_ADD_BATCH: Final[tuple[TextClause, ...]] = tuple(text(f) for f in folds(BATCH_ROWS))


def add_batch(connection: Connection, batch: str) -> None:
    """Add the rows one ingest transaction wrote to the rollups.

    (:data:`p402.ledger.owners.BATCH_ROWS`: selected by the batch index.)
    """
    for statement in _ADD_BATCH:
        connection.execute(statement, {"batch": batch})


_DIMENSIONS: Final = tuple(
    dict.fromkeys(dimension for rollup in ROLLUP_TABLES for dimension in rollup.dimensions)
)
_BASE_MS: Final = min(rollup.period_ms for rollup in ROLLUP_TABLES)
assert all(rollup.period_ms % _BASE_MS == 0 for rollup in ROLLUP_TABLES)


def _upsert(rollup: Rollup, placeholder: str) -> str:
    key = ", ".join(("tenant_id", rollup.period, *rollup.dimensions))
    values = ", ".join(placeholder for _ in range(2 + len(rollup.dimensions) + len(_MEASURES)))
    updates = ", ".join(f"{m} = {rollup.table}.{m} + excluded.{m}" for m in _MEASURES)
    return (
        f"INSERT INTO {rollup.table} ({key}, {', '.join(_MEASURES)}) VALUES ({values}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


_UPSERTS: Final = {
    paramstyle: tuple(_upsert(rollup, placeholder) for rollup in ROLLUP_TABLES)
    for paramstyle, placeholder in (("qmark", "?"), ("pyformat", "%s"), ("format", "%s"))
}


def _plus(first: list[int], second: list[int]) -> list[int]:
    return [a + b for a, b in zip(first, second, strict=True)]


def add_rows(connection: Connection, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
    """Add ``rows`` (economic events as tuples of ``columns``, every one of them written by
    this transaction) to the rollups, exactly as :func:`fold` would: summed here in one pass
    (periods by integer division toward zero, a missing value '', a NULL cost or token count
    adding nothing), then one upsert per rollup row."""
    index = {name: position for position, name in enumerate(columns)}
    tenant_at, ts_at = index["tenant_id"], index["ts_ms"]
    cost_at, input_at, output_at = (
        index["cost_picos"],
        index["input_tokens"],
        index["output_tokens"],
    )
    values_of = operator.itemgetter(*(index[_SOURCE_COLUMNS[d]] for d in _DIMENSIONS))
    # first per tenant, shortest period and values of every dimension (None and '' apart)
    finest: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        ts_ms = row[ts_at]
        key = (
            row[tenant_at],
            ts_ms // _BASE_MS if ts_ms >= 0 else -(-ts_ms // _BASE_MS),
            values_of(row),
        )
        cost = row[cost_at]
        measures = finest.get(key)
        if measures is None:
            finest[key] = [
                cost or 0,
                1,
                row[input_at] or 0,
                row[output_at] or 0,
                1 if cost is None else 0,
            ]
        else:
            measures[0] += cost or 0
            measures[1] += 1
            measures[2] += row[input_at] or 0
            measures[3] += row[output_at] or 0
            if cost is None:
                measures[4] += 1
    if not finest:
        return
    # then per tenant, shortest period and values ('' for missing ones)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for (tenant_id, base, values), measures in finest.items():
        key = (tenant_id, base, *[value or "" for value in values])
        total = groups.get(key)
        groups[key] = measures if total is None else _plus(total, measures)
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        for rollup, statement in zip(
            ROLLUP_TABLES, _UPSERTS[connection.dialect.paramstyle], strict=True
        ):
            ratio = rollup.period_ms // _BASE_MS
            values_of = operator.itemgetter(*(2 + _DIMENSIONS.index(d) for d in rollup.dimensions))
            periods: dict[int, int] = {}  # shortest period -> this rollup's
            sums: dict[tuple[Any, ...], list[int]] = {}  # lists shared, never changed
            for key, measures in groups.items():
                base = key[1]
                period = periods.get(base)
                if period is None:
                    period = periods[base] = base // ratio if base >= 0 else -(-base // ratio)
                rolled = (key[0], period, *values_of(key))
                total = sums.get(rolled)
                sums[rolled] = measures if total is None else _plus(total, measures)
            cursor.executemany(statement, [(*key, *total) for key, total in sums.items()])
    finally:
        cursor.close()


def add_events(connection: Connection, tenant_id: int, seqs: list[int]) -> None:
    """Add these rows (by ``seq``) to the rollups, after they changed."""
    _apply("+", connection, tenant_id, "seq IN :seqs", {"seqs": seqs}, ("seqs",))


def remove_events(connection: Connection, tenant_id: int, seqs: list[int]) -> None:
    """Take these rows (by ``seq``) out of the rollups, before they change or go."""
    _apply("-", connection, tenant_id, "seq IN :seqs", {"seqs": seqs}, ("seqs",))
