"""Canonical bytes and hashes of receipts: RFC 8785 (JSON Canonicalization Scheme) JSON,
hashed with SHA-256.

Receipt bodies hold only strings, integers, booleans, ``null``, lists and objects: amounts
are decimal strings, so no binary float ever reaches a hash. Integers must lie within
-(2**53 - 1) and 2**53 - 1, as RFC 8785 requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785
from rfc8785 import CanonicalizationError

__all__ = ["CanonicalizationError", "canonical_bytes", "sha256_hex"]


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """The RFC 8785 serialisation of ``value`` (UTF-8, sorted keys, no whitespace); raises
    :class:`CanonicalizationError` (a ``ValueError``) for a value it cannot carry exactly."""
    return rfc8785.dumps(dict(value))


def sha256_hex(value: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical bytes of ``value``, as 64 lower-case hex digits."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
