"""Who is calling: the API key from ``Authorization: Bearer`` or ``x-p402-api-key``, and
the role a route needs (``opt={"role": ...}`` on the handler)."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State

from p402.api.dependencies import LedgerEngine
from p402.api.errors import ApiError
from p402.instrumentation.vocabulary import API_KEY_HEADER
from p402.ledger.keys import Identity, Role, resolve_key

__all__ = ["provide_identity"]


def _presented_key(request: Request[object, object, State]) -> str | None:
    if key := request.headers.get(API_KEY_HEADER):
        return key.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def provide_identity(request: Request[object, object, State], engine: LedgerEngine) -> Identity:
    key = _presented_key(request)
    if key is None:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer KEY)")
    identity = resolve_key(engine, key)
    if identity is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    needed = request.route_handler.opt.get("role")
    if needed is not None and not identity.role.allows(Role(needed)):
        raise ApiError(403, "forbidden", f"this route needs a key with the {needed} role")
    return identity
