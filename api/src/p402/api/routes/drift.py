"""``GET /v1/drift``: how cost, events, cost per event, model mix and outcomes changed
between a baseline window and the current one, per group."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT, parse_time
from p402.api.routes.spend import GroupBy, dimensions
from p402.ledger.drift import InvalidWindows, Window, drift
from p402.ledger.paging import InvalidCursor

__all__ = ["get_drift"]


def _window(from_ms: int | None, to_ms: int | None, name: str) -> Window:
    if from_ms is None or to_ms is None:
        raise ApiError(400, "invalid_parameter", f"the {name} window needs both its bounds")
    return Window(from_ms, to_ms)


@get("/v1/drift", opt={"role": "read"}, tags=["spend"], sync_to_thread=True)
def get_drift(
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    baseline_from: Annotated[
        str | None, Parameter(required=False, description="ISO-8601 start of the baseline")
    ] = None,
    baseline_to: Annotated[
        str | None, Parameter(required=False, description="ISO-8601 end of the baseline")
    ] = None,
    group_by: GroupBy = None,
    limit: Annotated[
        int,
        Parameter(ge=1, le=MAX_LIMIT, description="groups per page (most current spend first)"),
    ] = 100,
    cursor: Annotated[
        str | None,
        Parameter(required=False, description="the previous page's next_cursor, to page on"),
    ] = None,
) -> dict[str, Any]:
    """The change from ``[baseline_from, baseline_to)`` to ``[from, to)`` (both required) of
    cost, events, cost per event and per day (absolute and relative), model mix (share of
    spend per model) and outcomes, per group and in ``total``; money in decimal strings. The
    groups with the most current spend come first, ``limit`` at a time, ``next_cursor``
    paging on; ``total`` covers every group.
    (All four bounds are required: they are checked after the key, so that a caller without
    one learns that first.)"""
    names = dimensions(group_by)
    baseline = _window(
        parse_time(baseline_from, "baseline_from"),
        parse_time(baseline_to, "baseline_to"),
        "baseline",
    )
    current = _window(event_filter.from_ms, event_filter.to_ms, "current (from, to)")
    with engine.connect() as connection:
        try:
            return drift(
                connection,
                identity.tenant_id,
                event_filter,
                names,
                baseline=baseline,
                current=current,
                limit=limit,
                cursor=cursor,
            )
        except InvalidWindows as error:
            raise ApiError(400, "invalid_parameter", str(error)) from None
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
