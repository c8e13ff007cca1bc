"""``POST /v1/outcomes``: what became of calls and sessions, with optional quality scores."""

from __future__ import annotations

from litestar import Request, post
from litestar.datastructures import State

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import OUTCOMES
from p402.ledger.clock import now_ms
from p402.ledger.outcomes import (
    InvalidOutcomes,
    RecordedOutcomes,
    UnknownTargets,
    read_outcomes,
    record_outcomes,
)
from p402.receiver.ingest import MAX_BODY_BYTES

__all__ = ["post_outcomes"]


@post(
    "/v1/outcomes",
    opt={"role": "ingest"},
    tags=["outcomes"],
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    operation_class=OUTCOMES.operation_class,
    responses=OUTCOMES.responses,
)
async def post_outcomes(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> dict[str, int]:
    """Store a JSON list of outcomes, all or nothing: each names an ``event_id`` or a
    ``session``, an ``outcome`` (accepted, rejected, revised, escalated, failed), and
    optionally a ``quality_score`` from 0 to 1 and a ``task_type``. The latest outcome of an
    event or session replaces the one before. Unknown events or sessions answer 404.

    Answers ``accepted`` (outcomes stored) and ``events_updated`` (events whose ``outcome``
    was set).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send outcomes as application/json")
    body = await request.body()

    def store() -> RecordedOutcomes:
        return record_outcomes(engine, identity.tenant_id, read_outcomes(body), now_ms())

    try:
        result = await request.app.state.run_sync(store)
    except InvalidOutcomes as error:
        raise ApiError(400, "invalid_outcomes", str(error)) from None
    except UnknownTargets as error:
        raise ApiError(404, "unknown_target", str(error)) from None
    return {"accepted": result.accepted, "events_updated": result.events_updated}
