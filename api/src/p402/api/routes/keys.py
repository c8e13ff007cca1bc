"""API keys of the caller's tenant (admin role): ``POST /v1/keys`` creates one and answers it
once, ``GET /v1/keys`` lists them (never a key nor its hash), ``DELETE /v1/keys/{id}``
revokes one: it answers 401 from the next request on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import delete, get, post
from litestar.params import FromPath, JSONBody, Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import KEY
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.keys import (
    InvalidKeyCursor,
    Role,
    create_key,
    get_key,
    list_keys,
    revoke_key,
    tenant_name,
)

__all__ = ["delete_key", "get_keys", "post_key"]


@dataclass
class KeyRequest:
    """The key to create: its ``role`` (ingest, read or admin), for the caller's tenant."""

    role: str
    tenant: str | None = None
    """The caller's own tenant (the default): an admin key manages its own tenant only."""


@post(
    "/v1/keys",
    opt={"role": "admin"},
    tags=["keys"],
    status_code=201,
    sync_to_thread=True,
    operation_class=KEY.operation_class,
    responses=KEY.responses,
)
def post_key(
    engine: LedgerEngine, identity: CallerIdentity, data: JSONBody[KeyRequest]
) -> dict[str, Any]:
    """Create a key; the answer's ``key`` is shown this once and never again (only its
    SHA-256 is stored). ``tenant`` must be the caller's own tenant: no key crosses tenants."""
    roles = [role.value for role in Role]
    if data.role not in roles:
        raise ApiError(400, "invalid_role", f"role: {data.role!r} is not one of {', '.join(roles)}")
    tenant = tenant_name(engine, identity.tenant_id)
    if data.tenant is not None and data.tenant != tenant:
        raise ApiError(403, "forbidden", "an admin key creates keys for its own tenant only")
    created, key = create_key(engine, tenant=tenant, role=Role(data.role))
    info = get_key(engine, identity.tenant_id, created.key_id)
    assert info is not None
    return {"tenant": tenant, "key": key, **info.json()}


@get("/v1/keys", opt={"role": "admin"}, tags=["keys"], sync_to_thread=True)
def get_keys(
    engine: LedgerEngine,
    identity: CallerIdentity,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """The tenant's keys, oldest first, revoked ones included: ``id``, ``role``,
    ``created_at``, ``revoked_at``."""
    try:
        keys, next_cursor = list_keys(engine, identity.tenant_id, limit=limit, cursor=cursor)
    except InvalidKeyCursor as error:
        raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": [key.json() for key in keys], "next_cursor": next_cursor}


@delete(
    "/v1/keys/{key_id:str}",
    opt={"role": "admin"},
    tags=["keys"],
    status_code=200,
    sync_to_thread=True,
)
def delete_key(
    engine: LedgerEngine, identity: CallerIdentity, key_id: FromPath[str]
) -> dict[str, Any]:
    """Revoke a key at once (revoking it again changes nothing); 404 for an unknown id and
    for another tenant's."""
    info = revoke_key(engine, identity.tenant_id, key_id)
    if info is None:
        raise ApiError(404, "not_found", f"no key {key_id!r}")
    return info.json()
