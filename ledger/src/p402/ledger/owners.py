"""The owners a tenant's events name: departments, projects, employees and sessions.

Kept by every ingest transaction from exactly the rows it wrote (their ``batch``), like the
rollups: one ``INSERT … SELECT … GROUP BY … ON CONFLICT`` per table. Sessions keep their
time span; owners learnt later fill in what was missing.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, TextClause, text

__all__ = ["register_batch"]

_BATCH: Final = "tenant_id = :tenant AND batch = :batch"


def _statements(lesser: str, greater: str) -> tuple[TextClause, ...]:
    return tuple(
        text(statement)
        for statement in (
            f"INSERT INTO department (tenant_id, name, first_seen_ms) "
            f"SELECT tenant_id, department, MIN(ts_ms) FROM economic_event "
            f"WHERE {_BATCH} AND department IS NOT NULL GROUP BY tenant_id, department "
            f"ON CONFLICT (tenant_id, name) DO NOTHING",
            f"INSERT INTO project (tenant_id, name, department, client, first_seen_ms) "
            f"SELECT tenant_id, project, MAX(department), MAX(client), MIN(ts_ms) "
            f"FROM economic_event WHERE {_BATCH} AND project IS NOT NULL "
            f"GROUP BY tenant_id, project "
            f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
            f"department = COALESCE(project.department, excluded.department), "
            f"client = COALESCE(project.client, excluded.client)",
            f"INSERT INTO employee (tenant_id, name, department, first_seen_ms) "
            f"SELECT tenant_id, employee, MAX(department), MIN(ts_ms) FROM economic_event "
            f"WHERE {_BATCH} AND employee IS NOT NULL GROUP BY tenant_id, employee "
            f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
            f"department = COALESCE(employee.department, excluded.department)",
            f"INSERT INTO session (tenant_id, name, employee, department, first_event_ms, "
            f"last_event_ms, last_received_ms) "
            f"SELECT tenant_id, session, MAX(employee), MAX(department), MIN(ts_ms), "
            f"MAX(ts_ms), MAX(received_ms) FROM economic_event "
            f"WHERE {_BATCH} AND session IS NOT NULL GROUP BY tenant_id, session "
            f"ON CONFLICT (tenant_id, name) DO UPDATE SET "
            f"employee = COALESCE(session.employee, excluded.employee), "
            f"department = COALESCE(session.department, excluded.department), "
            f"first_event_ms = {lesser}(session.first_event_ms, excluded.first_event_ms), "
            f"last_event_ms = {greater}(session.last_event_ms, excluded.last_event_ms), "
            f"last_received_ms = {greater}(session.last_received_ms, excluded.last_received_ms)",
        )
    )


_BY_DIALECT: Final = {
    "sqlite": _statements("MIN", "MAX"),
    "postgresql": _statements("LEAST", "GREATEST"),
}


def register_batch(connection: Connection, tenant_id: int, batch: str) -> None:
    """Register the owners and sessions of the rows one ingest transaction wrote."""
    for statement in _BY_DIALECT[connection.dialect.name]:
        connection.execute(statement, {"tenant": tenant_id, "batch": batch})
