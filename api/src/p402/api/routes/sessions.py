"""``GET /v1/sessions``: the session log, most costly sessions first."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT, RangeEnd, RangeStart, TextFilter, parse_range
from p402.ledger.paging import InvalidCursor
from p402.ledger.sessions import list_sessions

__all__ = ["get_sessions"]


@get("/v1/sessions", opt={"role": "read"}, tags=["sessions"], sync_to_thread=True)
def get_sessions(
    engine: LedgerEngine,
    identity: CallerIdentity,
    department: TextFilter = None,
    employee: TextFilter = None,
    from_: RangeStart = None,
    to: RangeEnd = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """Sessions whose span (first to last event) meets ``[from, to)``, most costly first
    (equal costs by name), with the whole session's ``cost_usd``, ``events``, tokens and
    ``unpriced_events``, whether it is ``closed``, and its latest ``receipt_id`` with that
    receipt's ``receipt_status`` (``sealed``, or ``anchored`` once its anchor is final); ranked from
    the sessions' own running totals, never from a scan of the events."""
    owners = {
        name: value
        for name, value in (("department", department), ("employee", employee))
        if value is not None
    }
    from_ms, to_ms = parse_range(from_, to)
    with engine.connect() as connection:
        try:
            page = list_sessions(
                connection,
                identity.tenant_id,
                from_ms=from_ms,
                to_ms=to_ms,
                owners=owners,
                limit=limit,
                cursor=cursor,
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}
