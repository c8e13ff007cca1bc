"""What of an exchange's content may leave the process, per privacy mode.

==================  ================================================================
mode                what the span carries beyond metadata
==================  ================================================================
metadata_only       nothing (default)
fingerprint_only    keyed HMAC-SHA256 fingerprints of the input and output content
redacted_trace      fingerprints, and the content after redaction
private_gateway     as redacted_trace, and the event is signed with the tenant's key
full_trace          fingerprints, and the content verbatim (an explicit opt-in)
==================  ================================================================

Content travels only as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, in
the GenAI semantic-convention message shape). Redaction replaces e-mail addresses, phone
numbers, card numbers (Luhn-checked), API keys and secrets, and any tenant pattern, with
``[REDACTED:<KIND>]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

from p402.instrumentation.formats import Message
from p402.instrumentation.vocabulary import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    P402_CONTENT_FINGERPRINT_INPUT,
    P402_CONTENT_FINGERPRINT_OUTPUT,
    P402_EVENT_SIGNATURE,
    PrivacyMode,
)

__all__ = [
    "TENANT_KEY",
    "ContentPolicy",
    "Redactor",
    "canonical_json",
    "content_policy",
    "sign_attributes",
]

TENANT_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
"""A tenant's own fingerprint or signing key, as ``PUT /v1/settings`` sets it: 64 hex digits."""

_SECRET_PATTERNS: Final = (
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}\b",
    r"\bp402_[A-Za-z0-9_\-]{20,}",
    r"(?i:\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*)",
    r"(?i:\b(?:api[_-]?key|secret|password|passwd|token)\b\s*[:=]\s*['\"]?[^\s'\"]{6,})",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
)
_SECRETS: Final = re.compile("|".join(f"(?:{p})" for p in _SECRET_PATTERNS))
# An address starts where a run of the characters of its local part starts, and that run is
# read once (possessive): a long run without an "@" costs one pass, not one per position.
_EMAIL: Final = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]++@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"
)
_CARD: Final = re.compile(r"\b\d(?:[ \-]?\d){12,18}\b")
_PHONE: Final = re.compile(r"(?<![\w+])\+?\d[\d ().\-]{7,}\d(?!\w)")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class Redactor:
    """Replaces sensitive substrings; tenant patterns are regular expressions, or one pattern
    compiled already (by any engine whose patterns have ``sub``, e.g. RE2 at the receiver)."""

    def __init__(self, tenant_patterns: Iterable[str] = (), *, compiled: Any = None) -> None:
        patterns = [p for p in tenant_patterns if p]
        if compiled is None and patterns:
            compiled = re.compile("|".join(f"(?:{p})" for p in patterns))
        self._tenant = compiled

    def redact(self, text: str) -> str:
        text = _SECRETS.sub("[REDACTED:SECRET]", text)
        if self._tenant is not None:
            text = self._tenant.sub("[REDACTED:PATTERN]", text)
        text = _EMAIL.sub("[REDACTED:EMAIL]", text)
        text = _CARD.sub(self._card, text)
        return _PHONE.sub(self._phone, text)

    @staticmethod
    def _card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[REDACTED:CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()

    @staticmethod
    def _phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[REDACTED:PHONE]" if 8 <= len(digits) <= 15 else match.group()

    def redact_messages(self, messages: list[Message]) -> list[Message]:
        return [
            {
                **message,
                "parts": [
                    {**part, "content": self.redact(part["content"])}
                    if isinstance(part.get("content"), str)
                    else part
                    for part in message.get("parts", [])
                ],
            }
            for message in messages
        ]


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same bytes for the same content."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=list
    ).encode()


def sign_attributes(attributes: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over the canonical JSON of every attribute but the signature itself."""
    signed = {k: v for k, v in attributes.items() if k != P402_EVENT_SIGNATURE}
    return hmac.new(key, canonical_json(signed), hashlib.sha256).hexdigest()


class ContentPolicy:
    """The content attributes of an event under one privacy mode."""

    def __init__(
        self,
        mode: PrivacyMode,
        *,
        fingerprint_key: bytes,
        signing_key: bytes,
        redactor: Redactor | None = None,
    ) -> None:
        self.mode = mode
        self.captures_content = mode is not PrivacyMode.METADATA_ONLY
        """Whether events carry content attributes (fingerprints or text) at all."""
        self.signs_events = mode is PrivacyMode.PRIVATE_GATEWAY
        self._key = fingerprint_key
        self._signing_key = signing_key
        self._redactor = redactor or Redactor()

    def sign(self, attributes: Mapping[str, Any]) -> str:
        return sign_attributes(attributes, self._signing_key)

    def fingerprint(self, messages: list[Message]) -> str:
        return hmac.new(self._key, canonical_json(messages), hashlib.sha256).hexdigest()

    def attributes(self, inputs: list[Message], outputs: list[Message]) -> dict[str, str]:
        if not self.captures_content:
            return {}
        shown: dict[str, str] = {
            P402_CONTENT_FINGERPRINT_INPUT: self.fingerprint(inputs),
            P402_CONTENT_FINGERPRINT_OUTPUT: self.fingerprint(outputs),
        }
        if self.mode is PrivacyMode.FINGERPRINT_ONLY:
            return shown
        if self.mode is not PrivacyMode.FULL_TRACE:
            inputs = self._redactor.redact_messages(inputs)
            outputs = self._redactor.redact_messages(outputs)
        shown[GEN_AI_INPUT_MESSAGES] = canonical_json(inputs).decode()
        shown[GEN_AI_OUTPUT_MESSAGES] = canonical_json(outputs).decode()
        return shown


def content_policy(
    mode: PrivacyMode,
    *,
    api_key: str | None,
    fingerprint_key: str | None = None,
    signing_key: str | None = None,
    redact_patterns: Iterable[str] = (),
) -> ContentPolicy:
    """The policy for ``mode``, with keys from the settings or derived from the API key.

    Keys of 64 hex digits are the tenant's own, as ``PUT /v1/settings`` sets them: a
    fingerprint key is then its 32 bytes and a signing key its (lower-case) digits, as the
    receiver uses them; any other text is used as it is. Without a fingerprint key,
    fingerprints are keyed by the API key (so they compare across the services sharing it).
    Without a signing key, events are signed with the SHA-256 of the API key, which the
    receiver holds and can verify against. Without either, a random per-process key is used
    and a warning says so.
    """
    if fingerprint_key:
        fingerprint = (
            bytes.fromhex(fingerprint_key)
            if TENANT_KEY.fullmatch(fingerprint_key)
            else fingerprint_key.encode()
        )
    elif api_key:
        fingerprint = hmac.new(api_key.encode(), b"p402 content fingerprint", "sha256").digest()
    else:
        fingerprint = _process_key(mode, "fingerprint")
    if signing_key:
        signing = (
            signing_key.lower() if TENANT_KEY.fullmatch(signing_key) else signing_key
        ).encode()
    elif api_key:
        signing = hashlib.sha256(api_key.encode()).hexdigest().encode()
    else:
        signing = _process_key(mode, "signing")
    return ContentPolicy(
        mode,
        fingerprint_key=fingerprint,
        signing_key=signing,
        redactor=Redactor(redact_patterns),
    )


def _process_key(mode: PrivacyMode, purpose: str) -> bytes:
    if mode is not PrivacyMode.METADATA_ONLY:
        logging.getLogger(__name__).warning(
            "P402 %s: no API key or %s key is set; using a random key for this process only",
            mode.value,
            purpose,
        )
    return secrets.token_bytes(32)
