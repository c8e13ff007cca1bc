"""Tenant settings the receiver applies at ingest: the maximum privacy mode, the key of the
fingerprints it makes of content a tenant may not store, the key ``private_gateway``
events may be signed with, and the tenant's own redaction patterns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.models import Tenant
from p402.ledger.redaction import patterns_from_column, patterns_to_column

__all__ = [
    "IngestSettings",
    "TenantSettings",
    "fingerprint_key_id",
    "ingest_settings",
    "set_max_privacy_mode",
    "signing_key_id",
    "tenant_settings",
    "update_tenant_settings",
]

_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """What the receiver applies to a tenant's events."""

    max_privacy: PrivacyMode
    fingerprint_key: bytes
    signing_key: bytes | None
    """The tenant's signing key as events are signed with it (its hex digits), if it has one."""
    redact_patterns: tuple[str, ...] = ()


def ingest_settings(engine: Engine, tenant_id: int) -> IngestSettings:
    with engine.connect() as connection:
        row = connection.execute(
            select(
                _TENANTS.c.max_privacy_mode,
                _TENANTS.c.fingerprint_key,
                _TENANTS.c.signing_key,
                _TENANTS.c.redact_patterns,
            ).where(_TENANTS.c.id == tenant_id)
        ).one()
    return IngestSettings(
        PrivacyMode(row.max_privacy_mode),
        bytes.fromhex(row.fingerprint_key),
        row.signing_key.encode() if row.signing_key else None,
        patterns_from_column(row.redact_patterns),
    )


def set_max_privacy_mode(engine: Engine, tenant_id: int, mode: PrivacyMode) -> None:
    """Allow the tenant's events to keep content up to ``mode`` (``metadata_only`` by default)."""
    with engine.begin() as connection:
        connection.execute(
            update(_TENANTS).where(_TENANTS.c.id == tenant_id).values(max_privacy_mode=mode.value)
        )


def _key_id(prefix: str, key_hex: str) -> str:
    """A name for a key that does not reveal it: ``prefix`` and a prefix of its SHA-256."""
    return prefix + hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:12]


def fingerprint_key_id(key_hex: str) -> str:
    return _key_id("fpk_", key_hex)


def signing_key_id(key_hex: str) -> str:
    return _key_id("sgk_", key_hex)


@dataclass(frozen=True, slots=True)
class TenantSettings:
    name: str
    max_privacy_mode: PrivacyMode
    fingerprint_key: str
    """Hex; never shown by the API, only its :func:`fingerprint_key_id`."""
    signing_key: str | None
    """Hex; never shown by the API, only its :func:`signing_key_id`."""
    redact_patterns: tuple[str, ...]


def tenant_settings(connection: Connection, tenant_id: int) -> TenantSettings:
    row = connection.execute(
        select(
            _TENANTS.c.name,
            _TENANTS.c.max_privacy_mode,
            _TENANTS.c.fingerprint_key,
            _TENANTS.c.signing_key,
            _TENANTS.c.redact_patterns,
        ).where(_TENANTS.c.id == tenant_id)
    ).one()
    return TenantSettings(
        row.name,
        PrivacyMode(row.max_privacy_mode),
        row.fingerprint_key,
        row.signing_key,
        patterns_from_column(row.redact_patterns),
    )


def update_tenant_settings(
    connection: Connection,
    tenant_id: int,
    *,
    max_privacy_mode: PrivacyMode | None = None,
    fingerprint_key: str | None = None,
    signing_key: str | None = None,
    redact_patterns: tuple[str, ...] | None = None,
) -> None:
    """Change the given settings (``None``: leave as it is); keys are 64 hex digits, and
    ``signing_key=""`` removes the signing key."""
    values: dict[str, str | None] = {}
    if max_privacy_mode is not None:
        values["max_privacy_mode"] = max_privacy_mode.value
    if fingerprint_key is not None:
        values["fingerprint_key"] = fingerprint_key
    if signing_key is not None:
        values["signing_key"] = signing_key or None
    if redact_patterns is not None:
        values["redact_patterns"] = patterns_to_column(redact_patterns)
    if values:
        connection.execute(update(_TENANTS).where(_TENANTS.c.id == tenant_id).values(**values))
