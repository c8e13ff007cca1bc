"""``GET|PUT /v1/settings``: a tenant's settings as one document (read: any read key; write:
admin), see :mod:`p402.ledger.settings`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, put
from litestar.datastructures import State
from litestar.params import Body

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import SETTINGS
from p402.api.routes.json_bodies import refuse_nul
from p402.ledger.clock import now_ms
from p402.ledger.keys import Role
from p402.ledger.settings import (
    InvalidSettings,
    apply_settings,
    read_settings_update,
    settings_json,
)

__all__ = ["get_settings", "put_settings"]

MAX_SETTINGS_BYTES = 1024 * 1024


@get("/v1/settings", opt={"role": "read"}, tags=["settings"], sync_to_thread=True)
def get_settings(engine: LedgerEngine, identity: CallerIdentity) -> dict[str, Any]:
    """The tenant's maximum privacy mode, whether a fingerprint key and a signing key are
    set (and their ``key_id``, never the keys), negotiated price overrides, model tier
    overrides and webhooks (their URLs to admin keys only, never their secrets)."""
    with engine.connect() as connection:
        return settings_json(connection, identity.tenant_id, admin=identity.role is Role.ADMIN)


@put(
    "/v1/settings",
    opt={"role": "admin"},
    tags=["settings"],
    status_code=200,
    request_max_body_size=MAX_SETTINGS_BYTES,
    operation_class=SETTINGS.operation_class,
    responses=SETTINGS.responses,
)
async def put_settings(
    request: Request[object, object, State],
    engine: LedgerEngine,
    identity: CallerIdentity,
    data: Annotated[
        dict[str, Any],
        Body(
            title="Settings",
            description="the settings to change, by name; those left out stay as they are",
        ),
    ],
) -> dict[str, Any]:
    """Change the settings the JSON object names, and only those: ``max_privacy_mode``,
    ``fingerprint_key`` (``"rotate"`` or 64 hex digits), ``signing_key`` (the same, or
    ``null`` to remove it), ``redact_patterns`` (the whole list of RE2 regular expressions
    the receiver also redacts), ``price_overrides`` (the whole list), ``model_tiers``
    (``{model: tier or null}``, merged), ``webhooks`` (the whole list). All or nothing: 400
    for a body that is not a JSON object, 422 for an invalid setting, and then nothing is
    written. Answers the settings as they now are, with a rotated key and new webhook
    secrets shown this once."""
    try:
        refuse_nul(data)
        update = read_settings_update(data)
    except ValueError as error:  # InvalidSettings, or NUL
        raise ApiError(422, "invalid_settings", str(error)) from None

    def store() -> dict[str, Any]:
        with engine.begin() as connection:
            return apply_settings(connection, identity.tenant_id, update, now_ms())

    try:
        shown: dict[str, Any] = await request.app.state.run_sync(store)
    except InvalidSettings as error:
        raise ApiError(422, "invalid_settings", str(error)) from None
    return shown
