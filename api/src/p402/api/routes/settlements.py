"""``POST /v1/sessions/{id}/close``: seal a session now; ``GET /v1/settlements``: the
tenant's settlement batches and where their anchoring stands."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get, post
from litestar.params import FromPath, Parameter, QueryParameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.events import InvalidCursor
from p402.settlement.anchoring import BatchState, list_batches
from p402.settlement.receipts import get_receipt
from p402.settlement.sealing import close_session

__all__ = ["get_settlements", "post_session_close"]


@post(
    "/v1/sessions/{session_id:str}/close",
    opt={"role": "ingest"},
    tags=["receipts"],
    status_code=200,
    sync_to_thread=True,
)
def post_session_close(
    engine: LedgerEngine, identity: CallerIdentity, session_id: FromPath[str]
) -> dict[str, Any]:
    """Close a session (its name) and seal its pending events into a receipt; answers the
    session's latest receipt. Idempotent: closing again seals only events that arrived since
    (a continuation receipt). Needs an ingest or admin key."""
    receipt_id = close_session(engine, identity.tenant_id, session_id)
    if receipt_id is None:
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    with engine.connect() as connection:
        receipt = get_receipt(connection, identity.tenant_id, receipt_id)
    assert receipt is not None
    return receipt


@get("/v1/settlements", opt={"role": "read"}, tags=["receipts"], sync_to_thread=True)
def get_settlements(
    engine: LedgerEngine,
    identity: CallerIdentity,
    batch_state: Annotated[
        BatchState | None,
        QueryParameter(name="state", required=False, description="only batches in this state"),
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """Settlement batches, newest first: state, size, Merkle root, transaction and block."""
    with engine.connect() as connection:
        try:
            page = list_batches(
                connection,
                identity.tenant_id,
                state=batch_state.value if batch_state else None,
                limit=limit,
                cursor=cursor,
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}
