"""Canonical receipt bytes are RFC 8785 JSON; the receipt hash is their SHA-256."""

from __future__ import annotations

import hashlib
import json

from p402.settlement.canonical import canonical_bytes, sha256_hex


def test_the_rfc_8785_sample_serialises_exactly():
    # RFC 8785 §3.2.2 (input written with Python escapes for the same characters).
    sample = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        canonical_bytes(sample)
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )


def test_properties_are_sorted_by_utf16_code_units():
    # RFC 8785 §3.2.3: the emoji (a surrogate pair, 0xD83D...) sorts before U+FB33.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    canonical = canonical_bytes(dict.fromkeys(keys, 0)).decode()
    order = [key for key in json.loads(canonical)]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_the_hash_depends_on_content_not_on_how_the_json_was_written():
    first = json.loads('{"b": {"y": 2, "x": "é"}, "a": [1, "two", null]}')
    second = json.loads('{\n  "a": [1, "two", null],\n  "b": {"x": "\\u00e9", "y": 2}\n}')
    assert canonical_bytes(first) == canonical_bytes(second)
    assert sha256_hex(first) == hashlib.sha256(canonical_bytes(second)).hexdigest()
    changed = {**first, "a": [1, "two", False]}
    assert sha256_hex(changed) != sha256_hex(first)
