"""Tenant data deletion: every row of one tenant, in every table of the ledger.

The tables are found from the models' metadata, not listed by hand, so a table added later is
covered without change: a table with a ``tenant_id`` column loses the tenant's rows; a table
without one loses the rows that reference (by foreign key, at any depth) a row being
deleted; the ``tenant`` row itself goes last. Tables are emptied children first (reverse
foreign-key order) in one transaction. On PostgreSQL that transaction sets
``p402.erasing = 'on'``, the one condition under which tables protected against deletion
(sealed receipts) accept it.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import ColumnElement, Engine, MetaData, Table, or_, select, text
from sqlmodel import SQLModel

from p402.ledger import models

__all__ = ["erase_tenant", "tenant_tables"]

_TENANT_TABLE: Final = models.Tenant.__tablename__


def _tenant_rows(
    table: Table, tenant_id: int, seen: frozenset[str] = frozenset()
) -> ColumnElement[bool] | None:
    """The condition that selects the tenant's rows of ``table``; ``None`` if it has none."""
    if table.name == _TENANT_TABLE:
        return table.c.id == tenant_id
    if "tenant_id" in table.c:
        return table.c.tenant_id == tenant_id
    through_parents = []
    for foreign_key in table.foreign_keys:
        parent = foreign_key.column.table
        if parent.name in seen or parent is table or not isinstance(parent, Table):
            continue
        condition = _tenant_rows(parent, tenant_id, seen | {table.name})
        if condition is not None:
            through_parents.append(
                foreign_key.parent.in_(select(foreign_key.column).where(condition))
            )
    return or_(*through_parents) if through_parents else None


def tenant_tables(metadata: MetaData = SQLModel.metadata) -> list[Table]:
    """Every table that can hold a tenant's rows, in the order they are emptied."""
    return [
        table for table in reversed(metadata.sorted_tables) if _tenant_rows(table, 0) is not None
    ]


def erase_tenant(
    engine: Engine, tenant_id: int, *, metadata: MetaData = SQLModel.metadata
) -> dict[str, int]:
    """Delete every row of the tenant, the tenant itself included; rows deleted per table."""
    deleted: dict[str, int] = {}
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL p402.erasing = 'on'"))
        for table in tenant_tables(metadata):
            condition = _tenant_rows(table, tenant_id)
            assert condition is not None
            deleted[table.name] = int(connection.execute(table.delete().where(condition)).rowcount)
    return deleted
