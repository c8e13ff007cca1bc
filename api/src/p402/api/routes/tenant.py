"""``DELETE /v1/tenant``: delete every row of the caller's tenant (admin role)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import delete
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.ledger.erasure import erase_tenant
from p402.ledger.keys import tenant_name

__all__ = ["delete_tenant"]


@delete("/v1/tenant", opt={"role": "admin"}, tags=["tenant"], status_code=200, sync_to_thread=True)
def delete_tenant(
    engine: LedgerEngine,
    identity: CallerIdentity,
    confirm: Annotated[
        str | None,
        Parameter(required=False, description="the tenant's name, to confirm the deletion"),
    ] = None,
) -> dict[str, Any]:
    """Delete all of the tenant's data, irreversibly: every row in every table that belongs
    to it (events, rollups, owners, budgets, receipts, imports, settings, API keys, the
    tenant itself). ``confirm`` must repeat the tenant's name. Answers the rows deleted per
    table; every key of the tenant, this one included, answers 401 afterwards."""
    name = tenant_name(engine, identity.tenant_id)
    if confirm != name:
        raise ApiError(
            400,
            "confirmation_required",
            "deleting a tenant's data cannot be undone: repeat its name in ?confirm=",
        )
    deleted = erase_tenant(engine, identity.tenant_id)
    return {"tenant": name, "deleted": deleted}
