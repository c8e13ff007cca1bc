"""The owners a tenant's events name: departments, projects, employees and sessions.

Kept by every ingest transaction from exactly the rows it wrote (their ``batch``), like the
rollups: one ``INSERT … SELECT … GROUP BY … ON CONFLICT`` per table (on SQLite, when every row
handed over is new, the same figures are taken in Python and upserted with one
``executemany`` per table: :func:`register_rows`). Sessions keep their time span; owners
learnt later fill in what was missing.

Sessions also keep their cost (``session.cost_picos``, what session budgets are checked
against): ingest adds the cost of the rows it wrote, in the same upsert, so concurrent
ingests add up exactly. Events that leave or change later — another instrumentation's report
replaced by P402's, a re-rating — take their cost out and put the new one in through the
``economic_event`` triggers of migration 0006, in the transaction that changes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Connection, text

__all__ = ["BATCH_ROWS", "register_batch", "register_rows", "statements"]

BATCH_ROWS: Final = "(SELECT * FROM economic_event WHERE batch = :batch) AS written"
"""The rows one ingest transaction wrote. A batch id is unique to one transaction of one
tenant: selecting by it alone lets both databases use the batch index (with the tenant too,
they scan the tenant's events)."""


def _conflicts(dialect: str) -> tuple[str, str, str, str]:
    """What each table's upsert does with a name it already has (department, project,
    employee, session)."""
    lesser, greater = ("LEAST", "GREATEST") if dialect == "postgresql" else ("MIN", "MAX")
    return (
        "ON CONFLICT (tenant_id, name) DO NOTHING",
        "ON CONFLICT (tenant_id, name) DO UPDATE SET "
        "department = COALESCE(project.department, excluded.department), "
        "client = COALESCE(project.client, excluded.client)",
        "ON CONFLICT (tenant_id, name) DO UPDATE SET "
        "department = COALESCE(employee.department, excluded.department)",
        "ON CONFLICT (tenant_id, name) DO UPDATE SET "
        "employee = COALESCE(session.employee, excluded.employee), "
        "department = COALESCE(session.department, excluded.department), "
        f"first_event_ms = {lesser}(session.first_event_ms, excluded.first_event_ms), "
        f"last_event_ms = {greater}(session.last_event_ms, excluded.last_event_ms), "
        f"last_received_ms = {greater}(session.last_received_ms, excluded.last_received_ms), "
        "cost_picos = session.cost_picos + excluded.cost_picos",
    )


_TABLES: Final = (
    "department (tenant_id, name, first_seen_ms)",
    "project (tenant_id, name, department, client, first_seen_ms)",
    "employee (tenant_id, name, department, first_seen_ms)",
    "session (tenant_id, name, employee, department, first_event_ms, last_event_ms, "
    "last_received_ms, cost_picos)",
)


def statements(dialect: str, rows: str) -> tuple[str, ...]:
    """The statements that register the owners and sessions of ``rows`` (a relation of
    economic events: :data:`BATCH_ROWS`, or a CTE of freshly inserted events)."""
    department, project, employee, session = _conflicts(dialect)
    return (
        f"INSERT INTO {_TABLES[0]} "
        f"SELECT tenant_id, department, MIN(ts_ms) FROM {rows} "
        f"WHERE department IS NOT NULL GROUP BY tenant_id, department {department}",
        f"INSERT INTO {_TABLES[1]} "
        f"SELECT tenant_id, project, MAX(department), MAX(client), MIN(ts_ms) "
        f"FROM {rows} WHERE project IS NOT NULL "
        f"GROUP BY tenant_id, project {project}",
        f"INSERT INTO {_TABLES[2]} "
        f"SELECT tenant_id, employee, MAX(department), MIN(ts_ms) FROM {rows} "
        f"WHERE employee IS NOT NULL GROUP BY tenant_id, employee {employee}",
        f"INSERT INTO {_TABLES[3]} "
        f"SELECT tenant_id, session, MAX(employee), MAX(department), MIN(ts_ms), "
        f"MAX(ts_ms), MAX(received_ms), COALESCE(SUM(cost_picos), 0) FROM {rows} "
        f"WHERE session IS NOT NULL GROUP BY tenant_id, session {session}",
    )


_BY_DIALECT: Final = {
    dialect: tuple(text(statement) for statement in statements(dialect, BATCH_ROWS))
    for dialect in ("sqlite", "postgresql")
}


def register_batch(connection: Connection, batch: str) -> None:
    """Register the owners and sessions of the rows one ingest transaction wrote."""
    for statement in _BY_DIALECT[connection.dialect.name]:
        connection.execute(statement, {"batch": batch})


def _values(table: str) -> str:
    width = table.count(",") + 1
    return f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"


_SQLITE_UPSERTS: Final = tuple(
    f"{_values(table)} {conflict}"
    for table, conflict in zip(_TABLES, _conflicts("sqlite"), strict=True)
)


def _greater(a: Any, b: Any) -> Any:
    """SQL ``MAX`` of two values of a group: NULL only when both are."""
    if a is None:
        return b
    return a if b is None or a >= b else b


def register_rows(
    connection: Connection, rows: Sequence[Sequence[Any]], columns: Sequence[str]
) -> None:
    """Register the owners and sessions of ``rows`` (economic events as tuples of
    ``columns``, every one of them written by this transaction), with the figures the
    statements of :func:`register_batch` would take from them.

    SQLite only: text compares there by its bytes, in the order Python compares strings,
    whereas PostgreSQL's ``MAX`` of text follows the database's collation.
    """
    if connection.dialect.name != "sqlite":
        raise ValueError("register_rows is for SQLite (use register_batch)")
    index = {name: position for position, name in enumerate(columns)}
    tenant_at, ts_at, received_at = index["tenant_id"], index["ts_ms"], index["received_ms"]
    department_at, project_at = index["department"], index["project"]
    client_at, employee_at = index["client"], index["employee"]
    session_at, cost_at = index["session"], index["cost_picos"]
    departments: dict[tuple[Any, Any], list[Any]] = {}
    projects: dict[tuple[Any, Any], list[Any]] = {}
    employees: dict[tuple[Any, Any], list[Any]] = {}
    sessions: dict[tuple[Any, Any], list[Any]] = {}
    for row in rows:
        tenant_id, ts_ms = row[tenant_at], row[ts_at]
        department, employee = row[department_at], row[employee_at]
        if department is not None:
            found = departments.get((tenant_id, department))
            if found is None:
                departments[tenant_id, department] = [tenant_id, department, ts_ms]
            elif ts_ms < found[2]:
                found[2] = ts_ms
        if (project := row[project_at]) is not None:
            client = row[client_at]
            found = projects.get((tenant_id, project))
            if found is None:
                projects[tenant_id, project] = [tenant_id, project, department, client, ts_ms]
            else:
                found[2] = _greater(found[2], department)
                found[3] = _greater(found[3], client)
                if ts_ms < found[4]:
                    found[4] = ts_ms
        if employee is not None:
            found = employees.get((tenant_id, employee))
            if found is None:
                employees[tenant_id, employee] = [tenant_id, employee, department, ts_ms]
            else:
                found[2] = _greater(found[2], department)
                if ts_ms < found[3]:
                    found[3] = ts_ms
        if (session := row[session_at]) is not None:
            received_ms, cost = row[received_at], row[cost_at] or 0
            found = sessions.get((tenant_id, session))
            if found is None:
                sessions[tenant_id, session] = [
                    tenant_id,
                    session,
                    employee,
                    department,
                    ts_ms,
                    ts_ms,
                    received_ms,
                    cost,
                ]
            else:
                found[2] = _greater(found[2], employee)
                found[3] = _greater(found[3], department)
                if ts_ms < found[4]:
                    found[4] = ts_ms
                if ts_ms > found[5]:
                    found[5] = ts_ms
                if received_ms > found[6]:
                    found[6] = received_ms
                found[7] += cost
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        for statement, groups in zip(
            _SQLITE_UPSERTS, (departments, projects, employees, sessions), strict=True
        ):
            if groups:
                cursor.executemany(statement, list(groups.values()))
    finally:
        cursor.close()
