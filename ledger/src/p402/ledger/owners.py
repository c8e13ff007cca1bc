"""The owners a tenant's events name: departments, projects, employees and sessions.

Kept by every ingest transaction from exactly the rows it wrote (their ``batch``), like the
rollups: one ``INSERT … SELECT … GROUP BY … ON CONFLICT`` per table. Sessions keep their
time span; owners learnt later fill in what was missing.

Sessions also keep their cost (``session.cost_picos``, what session budgets are checked
against): ingest adds the cost of the rows it wrote, in the same upsert, so concurrent
ingests add up exactly. Events that leave or change later — another instrumentation's report
replaced by P402's, a re-rating — take their cost out and put the new one in through the
``economic_event`` triggers of migration 0006, in the transaction that changes them.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, text

__all__ = ["BATCH_ROWS", "register_batch", "statements"]

BATCH_ROWS: Final = "(SELECT * FROM economic_event WHERE batch = :batch) AS written"
"""The rows one ingest transaction wrote. A batch id is unique to one transaction of one
tenant: selecting by it alone lets both databases use the batch index (with the tenant too,
they scan the tenant's events)."""


def statements(dialect: str, rows: str) -> tuple[str, ...]:
    """The statements that register the owners and sessions of ``rows`` (a relation of
    economic events: :data:`BATCH_ROWS`, or a CTE of freshly inserted events)."""
    lesser, greater = ("LEAST", "GREATEST") if dialect == "postgresql" else ("MIN", "MAX")
    return (
        f"INSERT INTO department (tenant_id, name, first_seen_ms) "
        f"SELECT tenant_id, department, MIN(ts_ms) FROM {rows} "
        f"WHERE department IS NOT NULL GROUP BY tenant_id, department "
        f"ON CONFLICT (tenant_id, name) DO NOTHING",
        f"INSERT INTO project (tenant_id, name, department, client, first_seen_ms) "
        f"SELECT tenant_id, project, MAX(department), MAX(client), MIN(ts_ms) "
        f"FROM {rows} WHERE project IS NOT NULL "
        f"GROUP BY tenant_id, project "
        f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
        f"department = COALESCE(project.department, excluded.department), "
        f"client = COALESCE(project.client, excluded.client)",
        f"INSERT INTO employee (tenant_id, name, department, first_seen_ms) "
        f"SELECT tenant_id, employee, MAX(department), MIN(ts_ms) FROM {rows} "
        f"WHERE employee IS NOT NULL GROUP BY tenant_id, employee "
        f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
        f"department = COALESCE(employee.department, excluded.department)",
        f"INSERT INTO session (tenant_id, name, employee, department, first_event_ms, "
        f"last_event_ms, last_received_ms, cost_picos) "
        f"SELECT tenant_id, session, MAX(employee), MAX(department), MIN(ts_ms), "
        f"MAX(ts_ms), MAX(received_ms), COALESCE(SUM(cost_picos), 0) FROM {rows} "
        f"WHERE session IS NOT NULL GROUP BY tenant_id, session "
        f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
        f"employee = COALESCE(session.employee, excluded.employee), "
        f"department = COALESCE(session.department, excluded.department), "
        f"first_event_ms = {lesser}(session.first_event_ms, excluded.first_event_ms), "
        f"last_event_ms = {greater}(session.last_event_ms, excluded.last_event_ms), "
        f"last_received_ms = {greater}(session.last_received_ms, excluded.last_received_ms), "
        f"cost_picos = session.cost_picos + excluded.cost_picos",
    )


_BY_DIALECT: Final = {
    dialect: tuple(text(statement) for statement in statements(dialect, BATCH_ROWS))
    for dialect in ("sqlite", "postgresql")
}


def register_batch(connection: Connection, batch: str) -> None:
    """Register the owners and sessions of the rows one ingest transaction wrote."""
    for statement in _BY_DIALECT[connection.dialect.name]:
        connection.execute(statement, {"batch": batch})
