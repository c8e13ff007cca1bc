"""``POST /v1/traces``: OTLP/HTTP trace export."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.datastructures import State

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.openapi_bodies import OTLP_TRACES
from p402.receiver.ingest import MAX_BODY_BYTES, PayloadTooLarge, ingest_traces

__all__ = ["export_traces"]


@post(
    "/v1/traces",
    opt={"role": "ingest"},
    tags=["ingest"],
    summary="OTLP/HTTP trace export",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    operation_class=OTLP_TRACES.operation_class,
    responses=OTLP_TRACES.responses,
)
async def export_traces(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> Response[bytes]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body exceeds {MAX_BODY_BYTES} bytes")
    result = await request.app.state.run_sync(
        ingest_traces,
        engine,
        identity.tenant_id,
        body,
        content_type=request.headers.get("content-type", ""),
        content_encoding=request.headers.get("content-encoding", ""),
        signing_key=identity.key_hash.encode(),
    )
    return Response(result.otlp_response(), media_type=result.media_type, headers=result.counts())
