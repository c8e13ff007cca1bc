"""Department policies and pre-call enforcement: ``GET|PUT /v1/policies`` (tier bounds and
routing per department, and the tenant's model tier overrides), ``GET /v1/policy`` (the
snapshot the instrumentation caches) and ``POST /v1/authorize`` (strict mode's reservation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final, cast

from litestar import Litestar, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import HTTPResponseStartEvent, HTTPScope, Receive, Send
from sqlalchemy import Engine

from p402.api.auth import invalid_key, presented_key, remembered_caller
from p402.api.conditional import holds_version
from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError, error_answer
from p402.api.openapi_bodies import AUTHORIZATION, POLICIES
from p402.api.routes.budgets import json_items
from p402.api.routes.filters import Cursor, Limit
from p402.instrumentation.money import from_picos, parse_usd, to_picos, usd_str
from p402.instrumentation.policy_rules import TierPolicy
from p402.instrumentation.vocabulary import OWNER_DIMENSIONS
from p402.ledger import clock
from p402.ledger.holds import (
    MAX_HOLD_PICOS,
    Authorization,
    CallToAuthorize,
    KeyNotLive,
    WouldWait,
    authorize,
)
from p402.ledger.keys import Role, forget_identity
from p402.ledger.paging import InvalidCursor, page_of
from p402.ledger.policies import (
    DEFAULT_REFRESH_SECONDS,
    InvalidPolicy,
    PolicySnapshot,
    PolicySpec,
    list_policies,
    policy_json,
    policy_snapshot,
    put_policies,
    tier_overrides,
)

__all__ = [
    "AUTHORIZE_PATH",
    "answer_authorize",
    "get_policies",
    "get_policy_snapshot",
    "post_authorize",
    "put_policy",
    "refresh_seconds",
]

REFRESH_VARIABLE: Final = "P402_POLICY_REFRESH_SECONDS"
MAX_REFRESH_SECONDS: Final = 3600
"""The longest refresh interval a server may give: a snapshot fetched less often would let
services overshoot their caps by longer."""
AUTHORIZE_PATH: Final = "/v1/authorize"
AUTHORIZE_ROLE: Final = Role.INGEST
AUTHORIZE_MAX_BODY_BYTES: Final = 1_000_000
"""The largest ``POST /v1/authorize`` body (a call's description takes a few hundred bytes)."""
_MAX_TOKENS: Final = 2**31 - 1
_AUTHORIZE_FIELDS: Final = frozenset(
    {
        "event_id",
        "provider",
        "model",
        "owner",
        "max_cost_usd",
        "max_input_tokens",
        "max_output_tokens",
    }
)


def _policies_body(
    engine: LedgerEngine, tenant_id: int, limit: int | None = None, cursor: str | None = None
) -> dict[str, Any]:
    """A page of the policies (every one without ``limit``) and all the tier overrides."""
    with engine.connect() as connection:
        overrides = tier_overrides(connection, tenant_id)
        policies = list_policies(connection, tenant_id)
    next_cursor = None
    if limit is not None:
        try:
            policies, next_cursor = page_of(
                policies, key=_by_department, limit=limit, cursor=cursor
            )
        except InvalidCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
    return {
        "data": [policy_json(policy, overrides) for policy in policies],
        "tier_overrides": {model: tier.value for model, tier in sorted(overrides.items())},
        "next_cursor": next_cursor,
    }


def _by_department(policy: TierPolicy) -> tuple[str]:
    return (policy.department,)


@get("/v1/policies", opt={"role": "read"}, tags=["policies"], sync_to_thread=True)
def get_policies(
    engine: LedgerEngine, identity: CallerIdentity, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Department policies (``department``, ``min_model``, ``max_model``, the tiers they stand
    for, ``routing``), by department, ``limit`` a page; and, on every page, the tenant's model
    tier overrides."""
    return _policies_body(engine, identity.tenant_id, limit, cursor)


def _write_policies(engine: LedgerEngine, tenant_id: int, items: list[Any]) -> None:
    try:
        specs = [PolicySpec.from_json(item) for item in items]
        with engine.begin() as connection:
            put_policies(connection, tenant_id, specs, clock.now_ms())
    except InvalidPolicy as error:
        raise ApiError(400, "invalid_policy", str(error)) from None


@put(
    "/v1/policies",
    opt={"role": "admin"},
    tags=["policies"],
    status_code=200,
    operation_class=POLICIES.operation_class,
    responses=POLICIES.responses,
)
async def put_policy(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> dict[str, Any]:
    """Create or replace the policy of each department: one policy or a list of them.
    ``min_model`` and ``max_model`` must have a known tier (a model of the tenant's own is
    given one with ``PUT /v1/settings`` ``model_tiers``). Answers every policy of the tenant,
    as ``GET /v1/policies`` does."""
    items = json_items(await request.body())
    run_sync = request.app.state.run_sync
    await run_sync(_write_policies, engine, identity.tenant_id, items)
    body: dict[str, Any] = await run_sync(_policies_body, engine, identity.tenant_id)
    return body


def refresh_seconds(environ: Mapping[str, str] | None = None) -> int:
    """How often services should fetch the policy snapshot: ``P402_POLICY_REFRESH_SECONDS``,
    or 10 s; raises :class:`ValueError` naming the setting when it is not a whole number of
    seconds from 1 to :data:`MAX_REFRESH_SECONDS`."""
    value = (os.environ if environ is None else environ).get(REFRESH_VARIABLE, "").strip()
    if not value:
        return DEFAULT_REFRESH_SECONDS
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_REFRESH_SECONDS):
        raise ValueError(
            f"{REFRESH_VARIABLE} must be a whole number of seconds from 1 to "
            f"{MAX_REFRESH_SECONDS:,}, not {value!r}"
        )
    return int(value)


@get("/v1/policy", opt={"role": "ingest"}, tags=["policies"], sync_to_thread=True)
def get_policy_snapshot(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> Response[Any]:
    """The snapshot the instrumentation caches and decides from: ``tier_overrides``,
    ``policies``, ``budgets`` (with ``spent_usd``, ``held_usd``, ``remaining_usd`` and
    ``status`` now), ``refresh_seconds`` and a ``version``, also sent as the ``ETag``: a
    request with ``If-None-Match`` of the current version is answered 304 with no body."""
    with engine.connect() as connection:
        snapshot: PolicySnapshot = policy_snapshot(
            connection,
            identity.tenant_id,
            clock.now_ms(),
            refresh_seconds=request.app.state.policy_refresh_seconds,
        )
    etag = f'"{snapshot.version}"'
    headers = {"etag": etag, "cache-control": "no-cache"}
    if holds_version(request.headers, etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=snapshot.body, headers=headers)


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ApiError(400, "invalid_authorization", f"{name}: a non-empty string")
    return value


def _count(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise ApiError(
            400, "invalid_authorization", f"{name}: a whole number of tokens, up to {_MAX_TOKENS}"
        )
    return value


def _call(body: object) -> CallToAuthorize:
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_authorization", "the body is a JSON object")
    unknown = set(body) - _AUTHORIZE_FIELDS
    if unknown:
        raise ApiError(
            400, "invalid_authorization", f"unknown field(s): {', '.join(sorted(unknown))}"
        )
    event_id = _text(body, "event_id", required=True)
    model = _text(body, "model", required=True)
    assert event_id is not None
    assert model is not None
    if len(event_id) > 64:
        raise ApiError(400, "invalid_authorization", "event_id: at most 64 characters")
    owners = body.get("owner") or {}
    if not isinstance(owners, Mapping) or not all(
        key in OWNER_DIMENSIONS and isinstance(value, str) and len(value) <= 200
        for key, value in owners.items()
    ):
        raise ApiError(
            400,
            "invalid_authorization",
            f"owner: an object of owner dimensions ({', '.join(OWNER_DIMENSIONS)}) → names"
            " (at most 200 characters)",
        )
    max_cost = None
    if body.get("max_cost_usd") is not None:
        try:
            amount = parse_usd(body["max_cost_usd"])
        except ValueError as error:
            raise ApiError(400, "invalid_authorization", f"max_cost_usd: {error}") from None
        if amount < 0:
            raise ApiError(400, "invalid_authorization", "max_cost_usd: must not be negative")
        max_cost = to_picos(amount)
        if max_cost > MAX_HOLD_PICOS:
            most = usd_str(from_picos(MAX_HOLD_PICOS))
            raise ApiError(400, "invalid_authorization", f"max_cost_usd: at most {most}")
    call = CallToAuthorize(
        event_id=event_id,
        model=model,
        provider=_text(body, "provider"),
        owners=dict(owners),
        max_cost_picos=max_cost,
        max_input_tokens=_count(body, "max_input_tokens"),
        max_output_tokens=_count(body, "max_output_tokens"),
    )
    if max_cost is None and call.max_input_tokens is None and call.max_output_tokens is None:
        raise ApiError(
            400,
            "invalid_authorization",
            "give the call's bound: max_cost_usd, or max_input_tokens and max_output_tokens",
        )
    return call


def _authorization_json(answer: Authorization) -> dict[str, Any]:
    return {
        "event_id": answer.event_id,
        "decision": answer.decision.value,
        "policy_result": answer.result.value,
        "model": answer.model,
        "reason": answer.reason,
        "hold_usd": None if answer.hold_picos is None else usd_str(from_picos(answer.hold_picos)),
        "expires_at": None if answer.expires_ms is None else clock.to_iso(answer.expires_ms),
    }


def _authorize(
    engine: Engine,
    key: str | None,
    needed: Role | None,
    body: bytes,
    now_ms: int,
    wait: bool = True,
) -> dict[str, Any]:
    """All of ``POST /v1/authorize`` past reading the request, in one call: the caller's
    key (remembered; checked live in the authorisation's own transaction), the body, the
    decision and its hold. ``wait=False``: raises :class:`WouldWait` rather than wait for
    SQLite's write lock."""
    identity = remembered_caller(engine, key, needed)
    items = json_items(body)
    if len(items) != 1:
        raise ApiError(400, "invalid_authorization", "the body is one JSON object")
    call = _call(items[0])
    try:
        answer = authorize(
            engine, identity.tenant_id, call, now_ms, key_id=identity.key_id, wait=wait
        )
    except KeyNotLive:
        forget_identity(engine, identity.key_id)
        raise invalid_key() from None
    return _authorization_json(answer)


async def _decide(app: Litestar, key: str | None, body: bytes) -> dict[str, Any]:
    engine: Engine = app.state.engine
    arguments = (engine, key, AUTHORIZE_ROLE, body, clock.now_ms())
    if engine.dialect.name == "sqlite":
        # Uncontended, a SQLite reservation takes less time than the two thread switches of
        # handing it to a worker (and holds the GIL for most of it either way): it runs
        # here, unless another transaction holds the write lock, which a worker waits for.
        try:
            return _authorize(*arguments, wait=False)
        except WouldWait:
            pass
    answer: dict[str, Any] = await app.state.run_sync(_authorize, *arguments)
    return answer


@post(
    AUTHORIZE_PATH,
    opt={"role": AUTHORIZE_ROLE.value},
    tags=["policies"],
    status_code=200,
    request_max_body_size=AUTHORIZE_MAX_BODY_BYTES,
    operation_class=AUTHORIZATION.operation_class,
    responses=AUTHORIZATION.responses,
)
async def post_authorize(request: Request[object, object, State]) -> dict[str, Any]:
    """Decide a call before it is sent and reserve its maximum cost (strict enforcement).

    Body: ``event_id`` (the ``p402.event.id`` the call's event will carry), ``model``,
    ``provider``, ``owner`` (its owner dimensions), and its bound: ``max_cost_usd`` and/or
    ``max_input_tokens`` + ``max_output_tokens``. Answers ``decision`` (``allow``,
    ``downgrade`` — send ``model`` instead —, ``block``), ``policy_result``, ``model``,
    ``reason``, and the hold made (``hold_usd``, ``expires_at``); the hold is released when
    the event is ingested.
    """
    return await _decide(request.app, presented_key(request.headers), await request.body())


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = cast(bytes, message.get("body", b""))
        size += len(chunk)
        if size > AUTHORIZE_MAX_BODY_BYTES:
            raise HTTPException(status_code=413)  # as the framework answers a body too large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def answer_authorize(app: Litestar, scope: HTTPScope, receive: Receive, send: Send) -> None:
    """``POST /v1/authorize`` answered straight on the ASGI interface, as
    :func:`post_authorize` answers it (same body, statuses and errors) without the framework's
    per-request work: strict enforcement's round trip is on the path of every call it
    covers. The route handler documents the route and answers whatever this does not take."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    status = 200
    try:
        answer: Any = await _decide(app, presented_key(headers), await _read_body(receive))
    except _Disconnected:
        return
    except Exception as error:  # answered as the route handler's exception handlers answer
        status, answer, extra = error_answer(error, app.get_logger())
    else:
        extra = {}
    content = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in extra.items()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": content, "more_body": False})
