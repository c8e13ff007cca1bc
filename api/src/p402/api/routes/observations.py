"""``GET /v1/observations``: per task type, cost and outcome quality per model tier, and
whether the economy tier's measured quality matches the premium tier's."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT, TextFilter
from p402.ledger.events import InvalidCursor
from p402.ledger.observations import list_observations

__all__ = ["get_observations"]


@get("/v1/observations", opt={"role": "read"}, tags=["observations"], sync_to_thread=True)
def get_observations(
    engine: LedgerEngine,
    identity: CallerIdentity,
    task_type: TextFilter = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """The routing observations the scheduler last computed, one per task type. The
    recommendation stays ``blocked`` until both the economy and premium tiers have enough
    scored outcomes; only measured figures are given, never a promised saving."""
    with engine.connect() as connection:
        try:
            page = list_observations(
                connection, identity.tenant_id, task_type=task_type, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}
