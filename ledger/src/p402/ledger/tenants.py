"""Tenant settings the receiver applies at ingest: the maximum privacy mode and the key of the
fingerprints it makes of content a tenant may not store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.models import Tenant

__all__ = [
    "TenantSettings",
    "fingerprint_key_id",
    "ingest_settings",
    "set_max_privacy_mode",
    "tenant_settings",
    "update_tenant_settings",
]

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


def fingerprint_key_id(key_hex: str) -> str:
    """A name for a fingerprint key that does not reveal it (a prefix of its SHA-256)."""
    return "fpk_" + hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class TenantSettings:
    name: str
    max_privacy_mode: PrivacyMode
    fingerprint_key: str
    """Hex; never shown by the API, only its :func:`fingerprint_key_id`."""


def tenant_settings(connection: Connection, tenant_id: int) -> TenantSettings:
    row = connection.execute(
        select(_TENANTS.c.name, _TENANTS.c.max_privacy_mode, _TENANTS.c.fingerprint_key).where(
            _TENANTS.c.id == tenant_id
        )
    ).one()
    return TenantSettings(row.name, PrivacyMode(row.max_privacy_mode), row.fingerprint_key)


def update_tenant_settings(
    connection: Connection,
    tenant_id: int,
    *,
    max_privacy_mode: PrivacyMode | None = None,
    fingerprint_key: str | None = None,
) -> None:
    """Change the given settings (``None``: leave as it is); the key is 64 hex digits."""
    values: dict[str, str] = {}
    if max_privacy_mode is not None:
        values["max_privacy_mode"] = max_privacy_mode.value
    if fingerprint_key is not None:
        values["fingerprint_key"] = fingerprint_key
    if values:
        connection.execute(update(_TENANTS).where(_TENANTS.c.id == tenant_id).values(**values))
