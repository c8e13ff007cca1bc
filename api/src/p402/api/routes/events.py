"""``GET /v1/events``: a tenant's economic events, filtered, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.events import InvalidCursor, list_events

__all__ = ["get_events"]


@get("/v1/events", opt={"role": "read"}, tags=["events"], sync_to_thread=True)
def get_events(
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """Economic events, newest first; ``next_cursor`` pages on."""
    with engine.connect() as connection:
        try:
            page = list_events(
                connection, identity.tenant_id, event_filter, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}
