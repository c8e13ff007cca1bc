"""Tenants and API keys. A key is random, shown once, and stored only as its SHA-256.

Roles: ``ingest`` (send events), ``read`` (query), ``admin`` (everything, including keys and
settings).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy import Engine, select
from sqlmodel import Session, col
from sqlmodel import select as select_model

from p402.ledger.clock import now_ms
from p402.ledger.models import ApiKey, Tenant

__all__ = [
    "KEY_PREFIX",
    "Identity",
    "Role",
    "create_key",
    "ensure_tenant",
    "hash_key",
    "resolve_key",
]

KEY_PREFIX: Final = "p402_"


class Role(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return self is Role.ADMIN or self is needed


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: the key's id, its tenant and its role."""

    key_id: str
    tenant_id: int
    role: Role
    key_hash: str = ""
    """The stored SHA-256 of the key: what events signed in ``private_gateway`` are keyed by."""


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created if it is new."""
    tenant = session.exec(select_model(Tenant).where(col(Tenant.name) == name)).first()
    if tenant is None:
        tenant = Tenant(name=name, created_ms=now_ms())
        session.add(tenant)
        session.flush()
    return tenant


def create_key(engine: Engine, *, tenant: str, role: Role) -> tuple[Identity, str]:
    """Create a key for ``tenant`` (created if new); returns its identity and the key, once."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session:
        tenant_row = ensure_tenant(session, tenant)
        assert tenant_row.id is not None
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            tenant_id=tenant_row.id,
            role=role.value,
            key_hash=hash_key(key),
            created_ms=now_ms(),
        )
        session.add(row)
        session.commit()
        return Identity(row.id, tenant_row.id, role, row.key_hash), key


def resolve_key(engine: Engine, key: str) -> Identity | None:
    """The identity of a live key, or ``None`` for an unknown or revoked one."""
    table = ApiKey.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        row = connection.execute(
            select(table.c.id, table.c.tenant_id, table.c.role, table.c.key_hash).where(
                table.c.key_hash == hash_key(key), table.c.revoked_ms.is_(None)
            )
        ).first()
    return Identity(row.id, row.tenant_id, Role(row.role), row.key_hash) if row else None
