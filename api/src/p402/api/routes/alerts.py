"""``GET /v1/alerts``: budget thresholds crossed, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.alerts import list_alerts
from p402.ledger.events import InvalidCursor

__all__ = ["get_alerts"]


@get("/v1/alerts", opt={"role": "read"}, tags=["alerts"], sync_to_thread=True)
def get_alerts(
    engine: LedgerEngine,
    identity: CallerIdentity,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """Each budget threshold (80, 90, 95, 100 % of the cap, or ``projected``) crossed, once
    per scope and period; ``next_cursor`` pages on."""
    with engine.connect() as connection:
        try:
            page = list_alerts(connection, identity.tenant_id, limit=limit, cursor=cursor)
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}
