"""``GET /v1/events``: a tenant's economic events, filtered, newest first; ``POST /v1/events``:
meter-only events in the same JSON shape."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.api.openapi_bodies import METER_EVENTS
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.events import InvalidCursor, get_event, list_events
from p402.receiver.ingest import MAX_BODY_BYTES
from p402.receiver.meter_events import InvalidEvents, MeterResult, ingest_meter_events
from p402.receiver.policy import ingest_policy

__all__ = ["get_event_by_id", "get_events", "post_events"]


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


@post(
    "/v1/events",
    opt={"role": "ingest"},
    tags=["events"],
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    operation_class=METER_EVENTS.operation_class,
    responses=METER_EVENTS.responses,
)
async def post_events(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> dict[str, int]:
    """Store a JSON list of events (all or nothing); ``id`` makes a repeated event count once.

    Answers ``accepted`` (events in the batch) and ``inserted`` (events new to the ledger).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send events as application/json")
    body = await request.body()

    def store() -> MeterResult:
        policy = ingest_policy(engine, identity.tenant_id)
        return ingest_meter_events(engine, identity.tenant_id, body, policy)

    try:
        result = await request.app.state.run_sync(store)
    except InvalidEvents as error:
        raise ApiError(400, "invalid_events", str(error)) from None
    return {"accepted": result.accepted, "inserted": result.inserted}


@get("/v1/events/{event_id:str}", opt={"role": "read"}, tags=["events"], sync_to_thread=True)
def get_event_by_id(
    engine: LedgerEngine, identity: CallerIdentity, event_id: FromPath[str]
) -> dict[str, Any]:
    """One event; 404 for an unknown id, and for another tenant's."""
    with engine.connect() as connection:
        event = get_event(connection, identity.tenant_id, event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event {event_id!r}")
    return event
