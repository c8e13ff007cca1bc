"""Tenants and API keys. A key is random, shown once, and stored only as its SHA-256.

Roles: ``ingest`` (send events), ``read`` (query), ``admin`` (everything, including keys and
settings).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, Row, and_, bindparam, or_, select, update
from sqlmodel import Session, col
from sqlmodel import select as select_model

from p402.instrumentation.vocabulary import Role
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.models import ApiKey, Tenant

__all__ = [
    "KEY_IS_LIVE",
    "KEY_PREFIX",
    "MAX_TENANT_NAME",
    "Identity",
    "InvalidKeyCursor",
    "KeyInfo",
    "Role",
    "check_tenant_name",
    "create_key",
    "ensure_tenant",
    "forget_identity",
    "get_key",
    "hash_key",
    "list_keys",
    "remembered_identity",
    "resolve_key",
    "revoke_key",
    "tenant_id",
    "tenant_name",
]

KEY_PREFIX: Final = "p402_"


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


MAX_TENANT_NAME: Final = 200


def check_tenant_name(name: str) -> str:
    """``name`` if it can name a tenant: some visible text, at most 200 characters, no control
    characters; else :class:`ValueError` saying why."""
    if not name.strip():
        raise ValueError("a tenant's name cannot be empty or only spaces")
    if len(name) > MAX_TENANT_NAME:
        raise ValueError(f"a tenant's name has at most {MAX_TENANT_NAME} characters")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise ValueError("a tenant's name cannot hold control characters")
    return name


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created if it is new (a new name is checked by
    :func:`check_tenant_name`)."""
    tenant = session.exec(select_model(Tenant).where(col(Tenant.name) == name)).first()
    if tenant is None:
        tenant = Tenant(name=check_tenant_name(name), created_ms=now_ms())
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


_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]
_LIVE_KEY_BY_HASH: Final = select(
    _KEYS.c.id, _KEYS.c.tenant_id, _KEYS.c.role, _KEYS.c.key_hash
).where(_KEYS.c.key_hash == bindparam("key_hash"), _KEYS.c.revoked_ms.is_(None))


def resolve_key(engine: Engine, key: str) -> Identity | None:
    """The identity of a live key, or ``None`` for an unknown or revoked one."""
    with engine.connect() as connection:
        row = connection.execute(_LIVE_KEY_BY_HASH, {"key_hash": hash_key(key)}).first()
    return Identity(row.id, row.tenant_id, Role(row.role), row.key_hash) if row else None


KEY_IS_LIVE: Final = select(_KEYS.c.id).where(
    _KEYS.c.id == bindparam("key_id"),
    _KEYS.c.tenant_id == bindparam("tenant"),
    _KEYS.c.revoked_ms.is_(None),
)
"""One row while the key ``key_id`` of tenant ``tenant`` is live (not revoked, not deleted)."""


# --- identities remembered by key hash -------------------------------------------------------

_REMEMBERED_MAX: Final = 1024
_remembered: weakref.WeakKeyDictionary[Engine, dict[str, Identity]] = weakref.WeakKeyDictionary()
_remembered_lock = threading.Lock()


def remembered_identity(engine: Engine, key: str) -> Identity | None:
    """:func:`resolve_key`, remembered per engine by the key's hash, for a caller that checks
    the key is still live (:data:`KEY_IS_LIVE`) in the transaction that acts on it.

    What is remembered (a key's id, tenant and role) never changes for a key; whether the key
    is still live does, which is why the caller checks that itself: a key revoked or deleted,
    by this process or any other, is refused from the next transaction on. Unknown keys are
    not remembered (another process may create them)."""
    key_hash = hash_key(key)
    remembered = _remembered.get(engine)
    if remembered is not None and (identity := remembered.get(key_hash)) is not None:
        return identity
    identity = resolve_key(engine, key)
    if identity is not None:
        with _remembered_lock:
            remembered = _remembered.setdefault(engine, {})
            if len(remembered) >= _REMEMBERED_MAX:
                remembered.clear()
            remembered[key_hash] = identity
    return identity


def forget_identity(engine: Engine, key_id: str) -> None:
    """Forget what :func:`remembered_identity` remembers of the key ``key_id``."""
    with _remembered_lock:
        remembered = _remembered.get(engine)
        if remembered:
            for key_hash in [h for h, i in remembered.items() if i.key_id == key_id]:
                del remembered[key_hash]


def tenant_id(engine: Engine, name: str) -> int | None:
    """The id of the tenant called ``name``; ``None`` if there is none."""
    with engine.connect() as connection:
        found: int | None = connection.execute(
            select(_TENANTS.c.id).where(_TENANTS.c.name == name)
        ).scalar_one_or_none()
    return found


def tenant_name(engine: Engine, tenant_id: int) -> str:
    with engine.connect() as connection:
        name: str = connection.execute(
            select(_TENANTS.c.name).where(_TENANTS.c.id == tenant_id)
        ).scalar_one()
    return name


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown of a key: never the key nor its hash."""

    id: str
    role: str
    created_ms: int
    revoked_ms: int | None

    def json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "role": self.role,
            "created_at": to_iso(self.created_ms),
            "revoked_at": None if self.revoked_ms is None else to_iso(self.revoked_ms),
        }


class InvalidKeyCursor(ValueError):
    """A key-listing cursor that was not handed out by :func:`list_keys`."""


def _key_cursor(info: KeyInfo) -> str:
    text = f"{info.created_ms}:{info.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_key_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, key_id = text.split(":", 1)
        return int(created), key_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidKeyCursor(f"invalid cursor: {cursor!r}") from None


def _key_info(row: Row[Any]) -> KeyInfo:
    return KeyInfo(row.id, row.role, row.created_ms, row.revoked_ms)


def list_keys(
    engine: Engine, tenant_id: int, *, limit: int, cursor: str | None = None
) -> tuple[list[KeyInfo], str | None]:
    """The tenant's keys, revoked ones included, oldest first, ``limit`` at a time."""
    c = _KEYS.c
    statement = select(c.id, c.role, c.created_ms, c.revoked_ms).where(c.tenant_id == tenant_id)
    if cursor:
        created, key_id = _read_key_cursor(cursor)
        statement = statement.where(
            or_(c.created_ms > created, and_(c.created_ms == created, c.id > key_id))
        )
    statement = statement.order_by(c.created_ms, c.id).limit(limit + 1)
    with engine.connect() as connection:
        keys = [_key_info(row) for row in connection.execute(statement)]
    if len(keys) > limit:
        keys = keys[:limit]
        return keys, _key_cursor(keys[-1])
    return keys, None


def get_key(engine: Engine, tenant_id: int, key_id: str) -> KeyInfo | None:
    """One of the tenant's keys; ``None`` for an unknown id or another tenant's key."""
    c = _KEYS.c
    with engine.connect() as connection:
        row = connection.execute(
            select(c.id, c.role, c.created_ms, c.revoked_ms).where(
                c.tenant_id == tenant_id, c.id == key_id
            )
        ).first()
    return None if row is None else _key_info(row)


def revoke_key(engine: Engine, tenant_id: int, key_id: str) -> KeyInfo | None:
    """Revoke one of the tenant's keys (it answers 401 from now on); revoking it again keeps
    the first revocation time. ``None`` for an unknown id or another tenant's key."""
    c = _KEYS.c
    with engine.begin() as connection:
        connection.execute(
            update(_KEYS)
            .where(c.tenant_id == tenant_id, c.id == key_id, c.revoked_ms.is_(None))
            .values(revoked_ms=now_ms())
        )
    forget_identity(engine, key_id)
    return get_key(engine, tenant_id, key_id)
