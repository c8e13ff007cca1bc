"""``GET /v1/anomalies``: the review queue of anomalous sessions; ``POST
/v1/anomalies/{id}/review``: mark one reviewed or dismissed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import get, post
from litestar.params import FromPath, JSONBody, Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import TOO_LARGE, error_responses
from p402.api.routes.filters import MAX_LIMIT
from p402.api.routes.json_bodies import refuse_nul
from p402.ledger.anomalies import AnomalyStatus, list_anomalies, review_anomaly
from p402.ledger.clock import now_ms
from p402.ledger.events import InvalidCursor

__all__ = ["Review", "get_anomalies", "post_anomaly_review"]

MAX_NOTE: int = 2000


@dataclass
class Review:
    """A verdict on an anomaly, with an optional note."""

    status: Literal["reviewed", "dismissed"]
    note: str | None = None


@get("/v1/anomalies", opt={"role": "read"}, tags=["anomalies"], sync_to_thread=True)
def get_anomalies(
    engine: LedgerEngine,
    identity: CallerIdentity,
    status: Annotated[AnomalyStatus | None, Parameter(required=False)] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> dict[str, Any]:
    """Sessions that cost more than 3 times their employee's 30-day average session, newest
    first; ``status`` (open, reviewed, dismissed) filters them."""
    with engine.connect() as connection:
        try:
            page = list_anomalies(
                connection, identity.tenant_id, status=status, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page.data, "next_cursor": page.next_cursor}


@post(
    "/v1/anomalies/{anomaly_id:str}/review",
    opt={"role": "admin"},
    tags=["anomalies"],
    status_code=200,
    sync_to_thread=True,
    responses=error_responses(TOO_LARGE),
)
def post_anomaly_review(
    engine: LedgerEngine,
    identity: CallerIdentity,
    anomaly_id: FromPath[str],
    data: JSONBody[Review],
) -> dict[str, Any]:
    """Mark an anomaly ``reviewed`` or ``dismissed`` (again, to change the verdict or note);
    404 for an unknown id, and for another tenant's."""
    if data.note is not None and len(data.note) > MAX_NOTE:
        raise ApiError(400, "invalid_review", f"note is longer than {MAX_NOTE} characters")
    try:
        refuse_nul(data.note)
    except ValueError as error:
        raise ApiError(400, "invalid_review", f"note: {error}") from None
    reviewed = review_anomaly(
        engine,
        identity.tenant_id,
        anomaly_id,
        status=AnomalyStatus(data.status),
        note=data.note,
        reviewer=identity.key_id,
        now_ms=now_ms(),
    )
    if reviewed is None:
        raise ApiError(404, "not_found", f"no anomaly {anomaly_id!r}")
    return reviewed
