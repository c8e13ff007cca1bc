"""The scheduler's leader lease: one server of a deployment runs the scheduled jobs.

Every server sharing a database competes for a named lease (a ``scheduler_lease`` row with
its holder and expiry). The holder renews it while it runs; another server takes it over
only once it has expired, e.g. when its holder stopped. Taking and renewing are one atomic
statement each, so two servers never both hold the lease at the same moment of the
scheduler's clock (the servers' clocks are taken to agree to well within the lease, as NTP
keeps them). What the jobs record has unique keys besides (an alert, an anomaly), so a
job that overruns a lost lease still cannot record it twice.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Engine, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from p402.ledger.models import SchedulerLease

__all__ = ["SCHEDULER_LEASE", "hold_lease", "lease_holder", "release_lease"]

SCHEDULER_LEASE: Final = "scheduler"

_LEASES = SchedulerLease.__table__  # type: ignore[attr-defined]


def hold_lease(
    engine: Engine, holder: str, now_ms: int, ttl_ms: int, name: str = SCHEDULER_LEASE
) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now_ms + ttl_ms``.

    Returns whether ``holder`` holds it: renewed (it held it), taken over (it had expired, or
    no one had ever held it), or not (another holder's lease is still running).
    """
    expires = now_ms + ttl_ms
    with engine.begin() as connection:
        renewed = connection.execute(
            update(_LEASES)
            .where(
                _LEASES.c.name == name,
                (_LEASES.c.holder == holder) | (_LEASES.c.expires_ms <= now_ms),
            )
            .values(
                holder=holder,
                expires_ms=expires,
                # A takeover starts a new term; a renewal keeps the term's start.
                acquired_ms=case((_LEASES.c.holder == holder, _LEASES.c.acquired_ms), else_=now_ms),
            )
        ).rowcount
        if renewed:
            return True
        dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
        taken = connection.execute(
            dialect.insert(_LEASES)
            .values(name=name, holder=holder, acquired_ms=now_ms, expires_ms=expires)
            .on_conflict_do_nothing()
            .returning(_LEASES.c.name)
        ).first()
        return taken is not None


def release_lease(engine: Engine, holder: str, name: str = SCHEDULER_LEASE) -> None:
    """Give the lease up (on shutdown), so another server takes over without waiting."""
    with engine.begin() as connection:
        connection.execute(
            update(_LEASES)
            .where(_LEASES.c.name == name, _LEASES.c.holder == holder)
            .values(expires_ms=0)
        )


def lease_holder(engine: Engine, now_ms: int, name: str = SCHEDULER_LEASE) -> str | None:
    """Who holds the lease at ``now_ms`` (``None`` when no lease is running)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(_LEASES.c.holder).where(_LEASES.c.name == name, _LEASES.c.expires_ms > now_ms)
        ).first()
    return row.holder if row else None
