"""``GET|PUT /v1/webhooks`` (admin): the URLs that receive each alert, HMAC-signed."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, put
from litestar.datastructures import State

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import WEBHOOKS
from p402.api.routes.filters import Cursor, Limit
from p402.api.routes.json_bodies import json_document
from p402.ledger.clock import now_ms
from p402.ledger.paging import InvalidCursor, page_of
from p402.ledger.webhooks import InvalidWebhooks, list_webhooks, read_webhook_specs, set_webhooks

__all__ = ["get_webhooks", "put_webhooks"]


@get("/v1/webhooks", opt={"role": "admin"}, tags=["webhooks"], sync_to_thread=True)
def get_webhooks(
    engine: LedgerEngine, identity: CallerIdentity, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """The tenant's webhooks, oldest first, ``limit`` a page (secrets are shown only when
    set)."""
    with engine.connect() as connection:
        webhooks = list_webhooks(connection, identity.tenant_id)
    try:
        page, next_cursor = page_of(webhooks, key=_oldest_first, limit=limit, cursor=cursor)
    except InvalidCursor as error:
        raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page, "next_cursor": next_cursor}


def _oldest_first(webhook: dict[str, Any]) -> tuple[str, str]:
    """The order of :func:`list_webhooks` (its times are ISO-8601 with milliseconds, so they
    sort as text)."""
    return (webhook["created_at"], webhook["url"])


@put(
    "/v1/webhooks",
    opt={"role": "admin"},
    tags=["webhooks"],
    status_code=200,
    operation_class=WEBHOOKS.operation_class,
    responses=WEBHOOKS.responses,
)
async def put_webhooks(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> dict[str, Any]:
    """Replace the tenant's webhooks with a JSON list of ``{"url": ..., "secret": ...}``.

    A URL already configured keeps its id and, unless a new one is given, its secret; a URL
    left out is removed. A ``secret`` left out is generated. The answer shows the secret of
    each webhook whose secret this call set, once.
    """
    try:
        specs = read_webhook_specs(json_document(await request.body()))
    except InvalidWebhooks as error:
        raise ApiError(400, "invalid_webhooks", str(error)) from None

    def store() -> list[dict[str, Any]]:
        with engine.begin() as connection:
            return set_webhooks(connection, identity.tenant_id, specs, now_ms())

    return {"data": await request.app.state.run_sync(store), "next_cursor": None}
