"""``GET /v1/spend``: cost, events and tokens grouped by any owner dimensions and more."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.ledger.events import GROUP_BY_DIMENSIONS, spend

__all__ = ["get_spend"]


def _dimensions(group_by: str | None) -> list[str]:
    names = [name.strip() for name in (group_by or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUP_BY_DIMENSIONS]
    if unknown:
        raise ApiError(
            400,
            "invalid_parameter",
            f"group_by: unknown dimension(s) {', '.join(unknown)}; "
            f"choose from {', '.join(GROUP_BY_DIMENSIONS)}",
        )
    return list(dict.fromkeys(names))


@get("/v1/spend", opt={"role": "read"}, tags=["spend"], sync_to_thread=True)
def get_spend(
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    group_by: Annotated[
        str | None,
        Parameter(required=False, description="comma-separated dimensions, e.g. department,model"),
    ] = None,
) -> dict[str, Any]:
    """Totals per group: ``cost_usd`` (decimal string), ``events``, input and output tokens."""
    dimensions = _dimensions(group_by)
    with engine.connect() as connection:
        rows, total = spend(connection, identity.tenant_id, event_filter, dimensions)
    return {"data": rows, "total": total, "next_cursor": None}
