"""Per-tenant locks for transactions that decide on what they read, so that servers sharing
one database (or threads sharing one process) cannot interleave them.

PostgreSQL: a transaction-scoped advisory lock on the pair (what is locked, tenant), held to
the end of the transaction; shared holders run together, an exclusive one waits for every
other holder and they for it. Under ``READ COMMITTED`` every statement after the lock sees
what the holders before it committed.

SQLite has one writer at a time: the transaction takes the database's write lock at once
(``BEGIN IMMEDIATE``, waiting up to the connection's ``busy_timeout``), so that what it reads
is what it writes against. Shared or not makes no difference there.

Call :func:`lock_tenant` first in a transaction, before it reads what it decides on.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import Connection

__all__ = ["Locked", "lock_tenant"]


class Locked(IntEnum):
    """What a lock serialises: its class, as PostgreSQL's advisory lock keys it."""

    BUDGET_HOLDS = 0x42554447  # "BUDG": authorisations against budgets (p402.ledger.holds)
    RESPONSE_KEYS = 0x52455350  # "RESP": matching one call's reports by response id
    RECEIPT_CHAIN = 0x43484149  # "CHAI": the tenant's next receipt in its hash chain
    SETTINGS = 0x53455454  # "SETT": replacing a tenant's lists of settings


def lock_tenant(
    connection: Connection, locked: Locked, tenant_id: int, *, shared: bool = False
) -> None:
    """Hold the tenant's lock of ``locked`` to the end of ``connection``'s transaction."""
    if connection.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        connection.exec_driver_sql(f"SELECT {function}(%s, %s)", (int(locked), tenant_id))
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    if not driver.in_transaction:  # else a write already holds the lock
        driver.execute("BEGIN IMMEDIATE")
