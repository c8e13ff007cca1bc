"""``GET /v1/receipts``, ``GET /v1/receipts/{id}`` (JSON, PDF or CSV) and
``GET /v1/receipts/{id}/proof``: a tenant's sealed receipts and their proof bundles."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.errors import ApiError
from p402.api.openapi_answers import CSV, JSON, PDF, RECEIPT
from p402.api.routes.filters import MAX_LIMIT
from p402.ledger.events import InvalidCursor
from p402.settlement.documents import receipt_pdf, receipts_csv
from p402.settlement.proofs import NotAnchored, proof_bundle
from p402.settlement.receipts import get_receipt, list_receipts

__all__ = ["get_receipt_by_id", "get_receipt_proof", "get_receipts"]

_SUFFIXES: Final = {".json": JSON, ".pdf": PDF, ".csv": CSV}


def _negotiated(request: Request[object, object, State], offered: list[str]) -> str:
    chosen = request.accept.best_match(offered, default=JSON)
    if chosen is None:
        raise ApiError(406, "not_acceptable", f"this route answers {', '.join(offered)}")
    return chosen


@get("/v1/receipts", opt={"role": "read"}, tags=["receipts"], sync_to_thread=True)
def get_receipts(
    request: Request[object, object, State],
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Parameter(required=False)] = None,
) -> Response[Any]:
    """Sealed receipts, newest first. ``session`` picks a session's receipts; owner, model and
    evidence filters pick receipts holding such events; ``from``/``to`` overlap their period.
    ``Accept: text/csv`` answers the page as CSV (next cursor in ``x-next-cursor``)."""
    media_type = _negotiated(request, [JSON, CSV])
    with engine.connect() as connection:
        try:
            page = list_receipts(
                connection, identity.tenant_id, event_filter, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    if media_type == CSV:
        headers = {"content-disposition": 'attachment; filename="receipts.csv"'}
        if page.next_cursor:
            headers["x-next-cursor"] = page.next_cursor
        return Response(receipts_csv(page.data), media_type=CSV, headers=headers)
    return Response({"data": page.data, "next_cursor": page.next_cursor})


@get(
    "/v1/receipts/{receipt_id:str}",
    opt={"role": "read"},
    tags=["receipts"],
    sync_to_thread=True,
    operation_class=RECEIPT.operation_class,
)
def get_receipt_by_id(
    request: Request[object, object, State],
    engine: LedgerEngine,
    identity: CallerIdentity,
    receipt_id: FromPath[str],
) -> Response[Any]:
    """One receipt: JSON; a one-page PDF with a ``.pdf`` suffix or ``Accept: application/pdf``;
    CSV with ``.csv`` or ``Accept: text/csv``. 404 for another tenant's."""
    for suffix, suffix_type in _SUFFIXES.items():
        if receipt_id.endswith(suffix):
            receipt_id, media_type = receipt_id.removesuffix(suffix), suffix_type
            break
    else:
        media_type = _negotiated(request, [JSON, PDF, CSV])
    with engine.connect() as connection:
        receipt = get_receipt(connection, identity.tenant_id, receipt_id)
    if receipt is None:
        raise ApiError(404, "not_found", f"no receipt {receipt_id!r}")
    if media_type == PDF:
        return Response(
            receipt_pdf(receipt),
            media_type=PDF,
            headers={"content-disposition": f'inline; filename="{receipt_id}.pdf"'},
        )
    if media_type == CSV:
        return Response(
            receipts_csv([receipt]),
            media_type=CSV,
            headers={"content-disposition": f'attachment; filename="{receipt_id}.csv"'},
        )
    return Response(receipt)


@get(
    "/v1/receipts/{receipt_id:str}/proof",
    opt={"role": "read"},
    tags=["receipts"],
    sync_to_thread=True,
)
def get_receipt_proof(
    engine: LedgerEngine, identity: CallerIdentity, receipt_id: FromPath[str]
) -> dict[str, Any]:
    """The receipt's proof bundle, for ``p402 verify BUNDLE.json --rpc-url URL``; 409 until
    its batch is final on chain."""
    with engine.connect() as connection:
        try:
            bundle = proof_bundle(connection, identity.tenant_id, receipt_id)
        except NotAnchored as error:
            raise ApiError(409, "not_anchored", str(error)) from None
    if bundle is None:
        raise ApiError(404, "not_found", f"no receipt {receipt_id!r}")
    return bundle
