"""Webhooks: the tenant's URLs that receive each alert, signed, retried until delivered.

A delivery is queued in the transaction that records its alert (one row per webhook), so a
restart loses none. The scheduler posts the due ones; a delivery that fails (connection
error, timeout, or a status other than 2xx) is tried again after 30 s, 1, 2, 4, … minutes
(doubling, at most an hour apart), and given up after :data:`MAX_ATTEMPTS` attempts.
Each webhook's deliveries go in order, several webhooks at a time, and every webhook with
deliveries due has its turn in a run; once one of a webhook's deliveries failed, its later
ones wait behind it until it is delivered or given up, so a destination that is down or slow
costs one attempt (at most :data:`TIMEOUT_SECONDS`) per retry, gets its notifications in the
order they were made, and holds up no other webhook.
Deliveries reach public internet addresses only, unless the operator allows private ones
(:mod:`p402.ledger.webhook_destinations`).

Each request is ``POST`` with a JSON body and these headers:

- ``X-P402-Event``: the kind of notification (``budget.alert``);
- ``X-P402-Delivery``: the delivery's id, the same on every retry (to drop duplicates):
  the webhook's id and the alert's, ``whk_….alt_…`` (no counter: nothing of other
  tenants' deliveries shows through it);
- ``X-P402-Timestamp``: when this attempt was signed, in Unix seconds;
- ``X-P402-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed by the webhook's secret,
  of the timestamp, a ``.``, and the raw body (``f"{timestamp}.{body}"``), so a receiver can
  refuse old or replayed requests as well as forged ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Engine, RowMapping, func, select, update

from p402.instrumentation.version import __version__
from p402.ledger.clock import to_iso
from p402.ledger.locks import Locked, lock_tenant
from p402.ledger.models import Webhook, WebhookDelivery
from p402.ledger.webhook_destinations import (
    ALLOW_PRIVATE_ENV,
    destination_client,
    refused_literal_host,
)

__all__ = [
    "EVENT_HEADER",
    "MAX_ATTEMPTS",
    "MAX_WEBHOOKS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryRun",
    "InvalidWebhooks",
    "WebhookSpec",
    "deliver_due",
    "enqueue",
    "list_webhooks",
    "read_webhook_specs",
    "retry_delay_ms",
    "set_webhooks",
    "sign",
]

EVENT_HEADER: Final = "X-P402-Event"
DELIVERY_HEADER: Final = "X-P402-Delivery"
TIMESTAMP_HEADER: Final = "X-P402-Timestamp"
SIGNATURE_HEADER: Final = "X-P402-Signature"
MAX_ATTEMPTS: Final = 10
FIRST_RETRY_MS: Final = 30_000
MAX_RETRY_MS: Final = 3_600_000
MAX_WEBHOOKS: Final = 20
MIN_SECRET_LENGTH: Final = 16
TIMEOUT_SECONDS: Final = 10.0
PARALLEL_WEBHOOKS: Final = 8
"""How many webhooks a run of :func:`deliver_due` posts to at the same time."""
_BATCH: Final = 100
_PER_WEBHOOK: Final = 10

_WEBHOOKS = Webhook.__table__  # type: ignore[attr-defined]
_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]


class InvalidWebhooks(ValueError):
    """A webhook configuration that cannot be stored; the message says why."""


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """A webhook as configured: its URL, and its secret (generated when not given)."""

    url: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What one run of :func:`deliver_due` did."""

    delivered: int
    retrying: int
    given_up: int


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-P402-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def retry_delay_ms(attempts: int) -> int:
    """How long after its ``attempts``-th failed attempt a delivery is tried again."""
    return int(min(FIRST_RETRY_MS * 2 ** (attempts - 1), MAX_RETRY_MS))


# --- configuration -------------------------------------------------------------------------


def _spec(item: object) -> WebhookSpec:
    if not isinstance(item, Mapping):
        raise InvalidWebhooks("a webhook must be a JSON object with a url")
    if unknown := set(item) - {"url", "secret"}:
        raise InvalidWebhooks(f"unknown field(s) {', '.join(sorted(unknown))}")
    url = item.get("url")
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidWebhooks("url must be a string of at most 2000 characters")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced "[" of an IPv6 host
        valid = False
    if not valid:
        raise InvalidWebhooks(f"url must be an http:// or https:// URL, not {url!r}")
    if refused := refused_literal_host(parts.hostname or ""):
        raise InvalidWebhooks(
            f"url {url!r}: {refused}; webhooks post to public addresses only "
            f"(the operator can set {ALLOW_PRIVATE_ENV}=true)"
        )
    secret = item.get("secret")
    if secret is not None and (
        not isinstance(secret, str) or not MIN_SECRET_LENGTH <= len(secret) <= 200
    ):
        raise InvalidWebhooks(
            f"secret must be a string of {MIN_SECRET_LENGTH} to 200 characters "
            f"(or left out, to have one generated)"
        )
    return WebhookSpec(url=url, secret=secret)


def read_webhook_specs(document: object) -> list[WebhookSpec]:
    """The webhooks of a ``PUT /v1/webhooks`` body: a JSON list of ``{url, secret?}``."""
    if not isinstance(document, list):
        raise InvalidWebhooks("the body must be a JSON list of webhooks")
    if len(document) > MAX_WEBHOOKS:
        raise InvalidWebhooks(f"at most {MAX_WEBHOOKS} webhooks per tenant")
    specs = [_spec(item) for item in document]
    urls = [spec.url for spec in specs]
    if len(set(urls)) != len(urls):
        raise InvalidWebhooks("each url may appear once")
    return specs


def _webhook_json(row: RowMapping, secret: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "created_at": to_iso(row["created_ms"]),
    }
    if secret is not None:
        shown["secret"] = secret
    return shown


def list_webhooks(connection: Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's webhooks, oldest first (by URL among those set together), without their
    secrets, with how many of their deliveries are ``pending``, ``delivered`` and ``failed``,
    and the error of the latest failed attempt (``last_error``, ``None`` if none failed)."""
    counts: dict[str, dict[str, int]] = {}
    for webhook_id, status, deliveries in connection.execute(
        select(_DELIVERIES.c.webhook_id, _DELIVERIES.c.status, func.count())
        .where(_DELIVERIES.c.tenant_id == tenant_id)
        .group_by(_DELIVERIES.c.webhook_id, _DELIVERIES.c.status)
    ):
        counts.setdefault(webhook_id, {})[status] = int(deliveries)
    last_errors: dict[str, str] = {}
    for webhook_id, error in connection.execute(
        select(_DELIVERIES.c.webhook_id, _DELIVERIES.c.last_error)
        .where(_DELIVERIES.c.tenant_id == tenant_id, _DELIVERIES.c.last_error.is_not(None))
        .order_by(_DELIVERIES.c.last_attempt_ms.desc(), _DELIVERIES.c.id.desc())
    ):
        last_errors.setdefault(webhook_id, error)
    rows = connection.execute(
        select(_WEBHOOKS)
        .where(_WEBHOOKS.c.tenant_id == tenant_id, _WEBHOOKS.c.removed_ms.is_(None))
        .order_by(_WEBHOOKS.c.created_ms, _WEBHOOKS.c.url)
    ).mappings()
    return [
        {
            **_webhook_json(row),
            "deliveries": {
                status: counts.get(row["id"], {}).get(status, 0)
                for status in ("pending", "delivered", "failed")
            },
            "last_error": last_errors.get(row["id"]),
        }
        for row in rows
    ]


def set_webhooks(
    connection: Connection, tenant_id: int, specs: list[WebhookSpec], now_ms: int
) -> list[dict[str, Any]]:
    """Make ``specs`` the tenant's webhooks: a URL already configured keeps its id (and its
    secret unless a new one is given); a URL left out is removed, and its pending deliveries
    with it. Answers the webhooks, with the ``secret`` of each one whose secret was set or
    generated by this call (shown this once). Replacements of one tenant's webhooks take
    turns: the last one is the list."""
    lock_tenant(connection, Locked.SETTINGS, tenant_id)
    current = {
        row["url"]: row
        for row in connection.execute(
            select(_WEBHOOKS).where(
                _WEBHOOKS.c.tenant_id == tenant_id, _WEBHOOKS.c.removed_ms.is_(None)
            )
        ).mappings()
    }
    wanted = {spec.url for spec in specs}
    removed = [row["id"] for url, row in current.items() if url not in wanted]
    if removed:
        connection.execute(
            update(_WEBHOOKS).where(_WEBHOOKS.c.id.in_(removed)).values(removed_ms=now_ms)
        )
        connection.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.webhook_id.in_(removed), _DELIVERIES.c.status == "pending")
            .values(status="failed", last_error="the webhook was removed")
        )
    shown = []
    for spec in specs:
        existing = current.get(spec.url)
        if existing is not None:
            if spec.secret is not None:
                connection.execute(
                    update(_WEBHOOKS)
                    .where(_WEBHOOKS.c.id == existing["id"])
                    .values(secret=spec.secret)
                )
            shown.append(_webhook_json(existing, spec.secret))
            continue
        row = {
            "id": "whk_" + secrets.token_hex(8),
            "tenant_id": tenant_id,
            "url": spec.url,
            "secret": spec.secret or "whsec_" + secrets.token_urlsafe(32),
            "created_ms": now_ms,
        }
        connection.execute(_WEBHOOKS.insert().values(**row))
        shown.append(_webhook_json(row, row["secret"]))  # type: ignore[arg-type]
    return shown


# --- delivery ------------------------------------------------------------------------------


def enqueue(
    connection: Connection, tenant_id: int, alert_id: str, body: Mapping[str, Any], now_ms: int
) -> int:
    """Queue ``body`` (an alert notification) for every webhook of the tenant, in the caller's
    transaction; returns how many deliveries were queued."""
    hooks = list(
        connection.execute(
            select(_WEBHOOKS.c.id).where(
                _WEBHOOKS.c.tenant_id == tenant_id, _WEBHOOKS.c.removed_ms.is_(None)
            )
        ).scalars()
    )
    if not hooks:
        return 0
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    connection.execute(
        _DELIVERIES.insert(),
        [
            {
                "tenant_id": tenant_id,
                "webhook_id": hook,
                "alert_id": alert_id,
                "body": text,
                "status": "pending",
                "attempts": 0,
                "next_attempt_ms": now_ms,
                "created_ms": now_ms,
            }
            for hook in hooks
        ],
    )
    return len(hooks)


def _post(client: httpx.Client, row: RowMapping, now_ms: int) -> tuple[int | None, str | None]:
    body = row["body"].encode()
    timestamp = now_ms // 1000
    try:
        response = client.post(
            row["url"],
            content=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"p402-webhooks/{__version__}",
                EVENT_HEADER: "budget.alert",
                DELIVERY_HEADER: f"{row['webhook_id']}.{row['alert_id']}",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(row["secret"], timestamp, body),
            },
        )
    except httpx.HTTPError as error:
        return None, f"{type(error).__name__}: {error}"[:2000]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


def _deliver_lane(
    engine: Engine, http: httpx.Client, lane: list[RowMapping], now_ms: int
) -> DeliveryRun:
    """Post one webhook's due deliveries in order, recording each; after one that failed, the
    rest wait behind it (a destination that is down costs one attempt per retry)."""
    delivered = retrying = given_up = 0
    for row in lane:
        status_code, error = _post(http, row, now_ms)
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_attempt_ms": now_ms,
            "last_status_code": status_code,
            "last_error": error,
        }
        if error is None:
            values.update(status="delivered", delivered_ms=now_ms)
            delivered += 1
        elif attempts >= MAX_ATTEMPTS:
            values["status"] = "failed"
            given_up += 1
        else:
            values["next_attempt_ms"] = now_ms + retry_delay_ms(attempts)
            retrying += 1
        with engine.begin() as connection:
            connection.execute(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.id == row["id"], _DELIVERIES.c.status == "pending")
                .values(**values)
            )
        if error is not None:
            break
    return DeliveryRun(delivered, retrying, given_up)


def deliver_due(engine: Engine, now_ms: int, *, client: httpx.Client | None = None) -> DeliveryRun:
    """Post the deliveries that are due at ``now_ms`` and record how each went: each webhook's
    in order, up to :data:`PARALLEL_WEBHOOKS` webhooks at a time, so that a slow or unreachable
    destination (one tenant's) does not hold up the others'."""
    # A webhook's pending deliveries go in the order they were made: one waiting for its
    # retry holds back the ones after it (each is sent once every one before it is due).
    # Each webhook's first delivery comes before any webhook's second (and so on), so a
    # backlog at one webhook leaves the others their turn in the run's batch.
    lane = {"partition_by": _DELIVERIES.c.webhook_id, "order_by": _DELIVERIES.c.id}
    ranked = (
        select(
            _DELIVERIES.c.id,
            func.row_number().over(**lane).label("place"),
            func.max(_DELIVERIES.c.next_attempt_ms).over(**lane).label("held_until"),
        )
        .where(_DELIVERIES.c.status == "pending")
        .subquery()
    )
    with engine.connect() as connection:
        due = (
            connection.execute(
                select(_DELIVERIES, _WEBHOOKS.c.url, _WEBHOOKS.c.secret)
                .join(ranked, ranked.c.id == _DELIVERIES.c.id)
                .join(_WEBHOOKS, _WEBHOOKS.c.id == _DELIVERIES.c.webhook_id)
                .where(ranked.c.place <= _PER_WEBHOOK, ranked.c.held_until <= now_ms)
                .order_by(ranked.c.place, _DELIVERIES.c.id)
                .limit(_BATCH)
            )
            .mappings()
            .all()
        )
    if not due:
        return DeliveryRun(0, 0, 0)
    lanes: dict[int, list[RowMapping]] = {}
    for row in due:
        lanes.setdefault(row["webhook_id"], []).append(row)
    own_client = client is None
    http = client or destination_client(TIMEOUT_SECONDS)
    try:
        with ThreadPoolExecutor(
            min(PARALLEL_WEBHOOKS, len(lanes)), thread_name_prefix="p402-webhooks"
        ) as pool:
            runs = list(
                pool.map(partial(_deliver_lane, engine, http, now_ms=now_ms), lanes.values())
            )
    finally:
        if own_client:
            http.close()
    return DeliveryRun(
        sum(run.delivered for run in runs),
        sum(run.retrying for run in runs),
        sum(run.given_up for run in runs),
    )
