"""``GET /v1/spend``: cost, events and tokens grouped by any owner dimensions and more, the
most costly groups first, a page at a time; ``GET /v1/spend/timeseries``: the same per hour,
day, week or month."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.clock import now_ms
from p402.ledger.events import GROUP_BY_DIMENSIONS, InvalidCursor, spend_page
from p402.ledger.timeseries import Interval, InvalidTimeseries, spend_timeseries

__all__ = ["GroupBy", "dimensions", "get_spend", "get_spend_timeseries"]

GroupBy = Annotated[
    str | None,
    Parameter(required=False, description="comma-separated dimensions, e.g. department,model"),
]


def dimensions(group_by: str | None) -> list[str]:
    """The dimensions named by a ``group_by`` parameter, each once; 400 for an unknown one."""
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
    group_by: GroupBy = None,
    limit: Annotated[
        int, Parameter(ge=1, le=MAX_LIMIT, description="groups per page (the most costly first)")
    ] = 100,
    cursor: Annotated[
        str | None,
        Parameter(required=False, description="the previous page's next_cursor, to page on"),
    ] = None,
) -> dict[str, Any]:
    """Totals per group: ``cost_usd`` (decimal string), ``events``, input and output tokens;
    the most costly groups first (groups of equal cost in the order of their values),
    ``limit`` at a time, ``next_cursor`` paging on. ``total`` covers every group."""
    names = dimensions(group_by)
    with engine.connect() as connection:
        try:
            page = spend_page(
                connection, identity.tenant_id, event_filter, names, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "total": page.total, "next_cursor": page.next_cursor}


@get("/v1/spend/timeseries", opt={"role": "read"}, tags=["spend"], sync_to_thread=True)
def get_spend_timeseries(
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    interval: Annotated[
        Interval, Parameter(description="bucket length: hour, day, ISO week or month (UTC)")
    ] = Interval.DAY,
    group_by: GroupBy = None,
) -> dict[str, Any]:
    """Spend per bucket over ``[from, to)`` (default: the last 24 hours, 30 days, 12 weeks or
    365 days up to now), every bucket present, empty ones at zero; each bucket's ``groups``
    when ``group_by`` is given; the range's ``total``. At most 1000 buckets."""
    names = dimensions(group_by)
    with engine.connect() as connection:
        try:
            return spend_timeseries(
                connection, identity.tenant_id, event_filter, names, interval, now_ms=now_ms()
            )
        except InvalidTimeseries as error:
            raise ApiError(400, "invalid_parameter", str(error)) from None
