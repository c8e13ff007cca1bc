"""Tenant settings the receiver applies at ingest."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.models import Tenant

__all__ = ["ingest_settings", "set_max_privacy_mode"]

_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


def ingest_settings(engine: Engine, tenant_id: int) -> tuple[PrivacyMode, bytes]:
    """The tenant's maximum privacy mode and the key of the fingerprints the receiver makes."""
    with engine.connect() as connection:
        row = connection.execute(
            select(_TENANTS.c.max_privacy_mode, _TENANTS.c.fingerprint_key).where(
                _TENANTS.c.id == tenant_id
            )
        ).one()
    return PrivacyMode(row.max_privacy_mode), bytes.fromhex(row.fingerprint_key)


def set_max_privacy_mode(engine: Engine, tenant_id: int, mode: PrivacyMode) -> None:
    """Allow the tenant's events to keep content up to ``mode`` (``metadata_only`` by default)."""
    with engine.begin() as connection:
        connection.execute(
            update(_TENANTS).where(_TENANTS.c.id == tenant_id).values(max_privacy_mode=mode.value)
        )
