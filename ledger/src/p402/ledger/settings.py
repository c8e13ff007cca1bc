"""A tenant's settings as one document (``GET|PUT /v1/settings``): the maximum privacy mode,
the fingerprint and signing keys, redaction patterns, negotiated price overrides, model tier
overrides and webhooks.

Each setting keeps its home (:mod:`p402.ledger.tenants`, :mod:`p402.ledger.price_overrides`,
:mod:`p402.ledger.policies`, :mod:`p402.ledger.webhooks`); this module reads and writes them
together. An update names only the settings it changes, and is all or nothing: it is read and
checked whole before anything is written, and written in the caller's one transaction.

- ``max_privacy_mode``: one of the privacy modes.
- ``fingerprint_key``: ``"rotate"`` for a new random key, or 64 hex digits (the key the
  tenant's own instrumentation uses, so that fingerprints match). Never shown again, only
  whether it is set and a ``key_id`` that names it; the key is shown once, in the answer of
  the update that rotated it.
- ``signing_key``: the same, or ``null`` to remove it: a key ``private_gateway`` events may be
  signed with (``P402_SIGNING_KEY``) besides the API key that sends them, e.g. when they pass
  through a collector that sends them with a key of its own.
- ``redact_patterns``: the whole list of the tenant's own redaction patterns, RE2 regular
  expressions (see :mod:`p402.ledger.redaction`); ``[]`` removes them.
- ``price_overrides``: the whole list of negotiated rates (see
  :func:`p402.ledger.price_overrides.read_price_overrides`).
- ``model_tiers``: ``{model: tier}``, merged into the tenant's overrides (``null`` removes
  one).
- ``webhooks``: the whole list of ``{url, secret?}`` (see :mod:`p402.ledger.webhooks`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import Connection

from p402.instrumentation.privacy import TENANT_KEY
from p402.instrumentation.tiers import ModelTier
from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.policies import InvalidPolicy, put_tier_overrides, tier_overrides
from p402.ledger.price_overrides import (
    InvalidPriceOverride,
    PriceOverrideSpec,
    list_price_overrides,
    read_price_overrides,
    replace_price_overrides,
)
from p402.ledger.redaction import InvalidPatterns, read_patterns
from p402.ledger.tenants import (
    fingerprint_key_id,
    signing_key_id,
    tenant_settings,
    update_tenant_settings,
)
from p402.ledger.webhooks import (
    InvalidWebhooks,
    WebhookSpec,
    list_webhooks,
    read_webhook_specs,
    set_webhooks,
)

__all__ = [
    "SETTINGS",
    "InvalidSettings",
    "SettingsUpdate",
    "apply_settings",
    "read_settings_update",
    "settings_json",
]

SETTINGS: Final = (
    "max_privacy_mode",
    "fingerprint_key",
    "signing_key",
    "redact_patterns",
    "price_overrides",
    "model_tiers",
    "webhooks",
)
"""The settings a document may name."""
ROTATE: Final = "rotate"
MAX_TIER_OVERRIDES: Final = 1000


class InvalidSettings(ValueError):
    """A settings update that cannot be applied; the message names the setting and why."""


@dataclass(frozen=True, slots=True)
class SettingsUpdate:
    """The settings an update changes (``None``: left as they are)."""

    max_privacy_mode: PrivacyMode | None = None
    fingerprint_key: str | None = None
    """A new key, in hex: given, or generated for ``"rotate"``."""
    rotated: bool = False
    signing_key: str | None = None
    """A new key, in hex, as for ``fingerprint_key``; ``""`` removes it."""
    signing_rotated: bool = False
    redact_patterns: tuple[str, ...] | None = None
    price_overrides: list[PriceOverrideSpec] | None = None
    model_tiers: dict[str, str | None] | None = None
    webhooks: list[WebhookSpec] | None = None


def _privacy_mode(value: object) -> PrivacyMode:
    modes = {mode.value: mode for mode in PrivacyMode}
    if isinstance(value, str) and value in modes:
        return modes[value]
    raise InvalidSettings(f"max_privacy_mode: {value!r} is not one of {', '.join(modes)}")


def _key(name: str, value: object, removable: bool = False) -> tuple[str, bool]:
    """The key (hex) a setting gives, and whether it was generated; ``""``: removed."""
    if value == ROTATE:
        return secrets.token_hex(32), True
    if isinstance(value, str) and TENANT_KEY.fullmatch(value):
        return value.lower(), False
    if removable and value is None:
        return "", False
    also = " (or null to remove it)" if removable else ""
    raise InvalidSettings(f'{name}: "rotate", or a key of 64 hex digits (32 bytes){also}')


def _model_tiers(value: object) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise InvalidSettings("model_tiers: a JSON object of model → tier (or null to remove)")
    if len(value) > MAX_TIER_OVERRIDES:
        raise InvalidSettings(f"model_tiers: at most {MAX_TIER_OVERRIDES} models")
    allowed = {tier.value for tier in ModelTier}
    tiers: dict[str, str | None] = {}
    for model, tier in value.items():
        if not isinstance(model, str) or not 0 < len(model) <= 200:
            raise InvalidSettings(f"model_tiers: {model!r} is not a model name")
        if tier is not None and tier not in allowed:
            raise InvalidSettings(
                f"model_tiers: the tier of {model} must be one of {', '.join(sorted(allowed))}"
                " (or null)"
            )
        tiers[model] = tier
    return tiers


def read_settings_update(document: object) -> SettingsUpdate:
    """The update a ``PUT /v1/settings`` body asks for; raises :class:`InvalidSettings`."""
    if not isinstance(document, Mapping):
        raise InvalidSettings("the body must be a JSON object of settings")
    if unknown := set(document) - set(SETTINGS):
        raise InvalidSettings(
            f"unknown setting(s) {', '.join(sorted(map(str, unknown)))}; "
            f"choose from {', '.join(SETTINGS)}"
        )
    key, rotated = (None, False)
    if "fingerprint_key" in document:
        key, rotated = _key("fingerprint_key", document["fingerprint_key"])
    signing: tuple[str | None, bool] = (None, False)
    if "signing_key" in document:
        signing = _key("signing_key", document["signing_key"], removable=True)
    try:
        patterns = (
            read_patterns(document["redact_patterns"]) if "redact_patterns" in document else None
        )
    except InvalidPatterns as error:
        raise InvalidSettings(f"redact_patterns: {error}") from None
    try:
        price_overrides = (
            read_price_overrides(document["price_overrides"])
            if "price_overrides" in document
            else None
        )
    except InvalidPriceOverride as error:
        raise InvalidSettings(f"price_overrides: {error}") from None
    try:
        webhooks = read_webhook_specs(document["webhooks"]) if "webhooks" in document else None
    except InvalidWebhooks as error:
        raise InvalidSettings(f"webhooks: {error}") from None
    return SettingsUpdate(
        max_privacy_mode=(
            _privacy_mode(document["max_privacy_mode"]) if "max_privacy_mode" in document else None
        ),
        fingerprint_key=key,
        rotated=rotated,
        signing_key=signing[0],
        signing_rotated=signing[1],
        redact_patterns=patterns,
        price_overrides=price_overrides,
        model_tiers=_model_tiers(document["model_tiers"]) if "model_tiers" in document else None,
        webhooks=webhooks,
    )


def _webhook_seen_by_reader(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook as a read key sees it: its host, not its URL (which may carry a token)."""
    shown = {name: value for name, value in webhook.items() if name not in {"url", "secret"}}
    shown["host"] = urlsplit(webhook["url"]).hostname
    return shown


def _key_shown(key_hex: str | None, key_id: Callable[[str], str]) -> dict[str, Any]:
    """How the API shows a key: whether it is set, and its ``key_id``; never the key."""
    return {"set": bool(key_hex), "key_id": key_id(key_hex) if key_hex else None}


def settings_json(
    connection: Connection,
    tenant_id: int,
    *,
    admin: bool,
    webhooks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The tenant's settings as the API shows them: never the keys; webhook URLs only to an
    ``admin`` (``webhooks``: the list to show instead of the stored one)."""
    tenant = tenant_settings(connection, tenant_id)
    hooks = list_webhooks(connection, tenant_id) if webhooks is None else webhooks
    return {
        "tenant": tenant.name,
        "max_privacy_mode": tenant.max_privacy_mode.value,
        "fingerprint_key": _key_shown(tenant.fingerprint_key, fingerprint_key_id),
        "signing_key": _key_shown(tenant.signing_key, signing_key_id),
        "redact_patterns": list(tenant.redact_patterns),
        "price_overrides": list_price_overrides(connection, tenant_id),
        "model_tiers": {
            model: tier.value
            for model, tier in sorted(tier_overrides(connection, tenant_id).items())
        },
        "webhooks": hooks if admin else [_webhook_seen_by_reader(hook) for hook in hooks],
    }


def apply_settings(
    connection: Connection, tenant_id: int, update: SettingsUpdate, now_ms: int
) -> dict[str, Any]:
    """Write ``update`` (in the caller's transaction: on an error nothing of it is kept) and
    answer the settings as they now are, with what is shown once: a rotated fingerprint or
    signing key, webhook secrets set or generated by this update."""
    update_tenant_settings(
        connection,
        tenant_id,
        max_privacy_mode=update.max_privacy_mode,
        fingerprint_key=update.fingerprint_key,
        signing_key=update.signing_key,
        redact_patterns=update.redact_patterns,
    )
    if update.price_overrides is not None:
        replace_price_overrides(connection, tenant_id, update.price_overrides)
    if update.model_tiers is not None:
        try:
            put_tier_overrides(connection, tenant_id, update.model_tiers)
        except InvalidPolicy as error:
            raise InvalidSettings(f"model_tiers: {error}") from None
    webhooks = None
    if update.webhooks is not None:
        set_now = set_webhooks(connection, tenant_id, update.webhooks, now_ms)
        new_secrets = {hook["id"]: hook["secret"] for hook in set_now if "secret" in hook}
        webhooks = [
            {**hook, "secret": new_secrets[hook["id"]]} if hook["id"] in new_secrets else hook
            for hook in list_webhooks(connection, tenant_id)
        ]
    shown = settings_json(connection, tenant_id, admin=True, webhooks=webhooks)
    if update.rotated and update.fingerprint_key is not None:
        shown["fingerprint_key"]["key"] = update.fingerprint_key
    if update.signing_rotated and update.signing_key:
        shown["signing_key"]["key"] = update.signing_key
    return shown
