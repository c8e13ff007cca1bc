"""Spend rollups: per tenant, UTC day, owners, provider and model.

Every ingest transaction folds exactly the rows it wrote (selected by their ``batch``) into
the rollup with one ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE``, and takes out
the rows it replaced, so the rollup is exact under concurrent ingest and never needs a
rebuild. Spend questions over whole days and rollup dimensions are answered from it.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, bindparam, text

from p402.ledger.models import ROLLUP_DIMENSIONS
from p402.ledger.owners import BATCH_ROWS

__all__ = ["DAY_MS", "add_batch", "add_events", "fold", "remove_events"]

DAY_MS: Final = 86_400_000
_MEASURES: Final = ("cost_picos", "events", "input_tokens", "output_tokens", "unpriced_events")
_SOURCE_COLUMNS: Final = {
    "department": "department",
    "project": "project",
    "client": "client",
    "employee": "employee",
    "provider": "provider",
    "model": "model_used",
}
_KEY: Final = ", ".join(("tenant_id", "day", *ROLLUP_DIMENSIONS))
_GROUPED: Final = ", ".join(
    (
        "tenant_id",
        f"ts_ms / {DAY_MS}",
        *(f"COALESCE({_SOURCE_COLUMNS[d]}, '')" for d in ROLLUP_DIMENSIONS),
    )
)
_AGGREGATES: Final = (
    "COALESCE(SUM(cost_picos), 0), COUNT(*), COALESCE(SUM(input_tokens), 0), "
    "COALESCE(SUM(output_tokens), 0), COUNT(*) - COUNT(cost_picos)"
)


def fold(rows: str, sign: str = "+") -> str:
    """The statement that adds (``sign`` ``+``) or takes out (``-``) ``rows`` (a relation of
    economic events, e.g. a CTE of freshly inserted ones) to or from the rollup."""
    updates = ", ".join(f"{m} = spend_rollup.{m} {sign} excluded.{m}" for m in _MEASURES)
    return (
        f"INSERT INTO spend_rollup ({_KEY}, {', '.join(_MEASURES)}) "
        f"SELECT {_GROUPED}, {_AGGREGATES} FROM {rows} "
        f"GROUP BY {_GROUPED} "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET {updates}"
    )


def _apply(
    sign: str,
    connection: Connection,
    tenant_id: int,
    where: str,
    params: dict[str, Any],
    expanding: tuple[str, ...] = (),
) -> None:
    rows = f"(SELECT * FROM economic_event WHERE tenant_id = :rollup_tenant AND ({where})) AS e"
    statement = text(fold(rows, sign))
    if expanding:
        statement = statement.bindparams(*(bindparam(name, expanding=True) for name in expanding))
    connection.execute(statement, {**params, "rollup_tenant": tenant_id})


_ADD_BATCH: Final = text(fold(BATCH_ROWS))


def add_batch(connection: Connection, batch: str) -> None:
    """Add the rows one ingest transaction wrote to the rollup.

    (:data:`p402.ledger.owners.BATCH_ROWS`: selected by the batch index.)
    """
    connection.execute(_ADD_BATCH, {"batch": batch})


def add_events(connection: Connection, tenant_id: int, seqs: list[int]) -> None:
    """Add these rows (by ``seq``) to the rollup, after they changed."""
    _apply("+", connection, tenant_id, "seq IN :seqs", {"seqs": seqs}, ("seqs",))


def remove_events(connection: Connection, tenant_id: int, seqs: list[int]) -> None:
    """Take these rows (by ``seq``) out of the rollup, before they change or go."""
    _apply("-", connection, tenant_id, "seq IN :seqs", {"seqs": seqs}, ("seqs",))
