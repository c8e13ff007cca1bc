"""Who is calling: the API key from ``Authorization: Bearer`` or ``x-p402-api-key``, and
the role a route needs (``opt={"role": ...}`` on the handler).

Most routes receive the caller as the ``identity`` dependency: the :func:`authenticate`
guard looks the key up once per request, before anything else of the request is read (a
request without a valid key is answered 401, and one with the wrong role 403, whatever its
body), and :func:`provide_identity` hands the result to the handler.

``POST /v1/authorize``, the hot path of strict enforcement, instead resolves the key in the
same worker call as its transaction (:func:`remembered_caller`), from identities remembered
by key hash, and checks in that transaction that the key is still live.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler
from sqlalchemy import Engine

from p402.api.errors import ApiError
from p402.instrumentation.vocabulary import API_KEY_HEADER
from p402.ledger.keys import Identity, Role, remembered_identity, resolve_key

__all__ = [
    "authenticate",
    "caller",
    "invalid_key",
    "needed_role",
    "presented_key",
    "provide_identity",
    "remembered_caller",
]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request with ``headers`` (names in lower case) presents, if any."""
    if key := headers.get(API_KEY_HEADER):
        return key.strip()
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def needed_role(handler: BaseRouteHandler) -> Role | None:
    """The role a route needs (``opt={"role": ...}`` on its handler), if any."""
    needed = handler.opt.get("role")
    return None if needed is None else Role(needed)


def invalid_key() -> ApiError:
    """The 401 of a key that is unknown, revoked or deleted."""
    return ApiError(401, "unauthorized", "the API key is not valid")


def _checked(identity: Identity | None, needed: Role | None) -> Identity:
    if identity is None:
        raise invalid_key()
    if needed is not None and not identity.role.allows(needed):
        raise ApiError(403, "forbidden", f"this route needs a key with the {needed.value} role")
    return identity


def _missing() -> ApiError:
    return ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer KEY)")


def caller(engine: Engine, key: str | None, needed: Role | None) -> Identity:
    """The identity of the live key ``key``; raises the 401 or 403 the API answers with."""
    if key is None:
        raise _missing()
    return _checked(resolve_key(engine, key), needed)


_IDENTITY: Final = "identity"


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: the caller of a route that takes the ``identity``, checked before its
    parameters and body are read."""
    if _IDENTITY not in handler.parsed_fn_signature.parameters:
        return
    identity = await anyio.to_thread.run_sync(
        caller,
        connection.app.state.engine,
        presented_key(connection.headers),
        needed_role(handler),
    )
    connection.state[_IDENTITY] = identity


def provide_identity(request: Request[object, object, State]) -> Identity:
    """The caller :func:`authenticate` checked."""
    identity: Identity = request.state[_IDENTITY]
    return identity


def remembered_caller(engine: Engine, key: str | None, needed: Role | None) -> Identity:
    """The caller of a route that checks its key live in its own transaction
    (:data:`p402.ledger.keys.KEY_IS_LIVE`); raises the route's 401 or 403."""
    if key is None:
        raise _missing()
    return _checked(remembered_identity(engine, key), needed)
