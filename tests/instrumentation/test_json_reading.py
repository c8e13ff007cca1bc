"""Bodies and events decode to the same objects, exact decimals included, whichever decoder
runs: what the fast one refuses goes to the standard library."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from p402.instrumentation._json import load_json

CASES = [
    b'{"usage": {"prompt_tokens": 12, "cost": 0.000123400}, "id": "a"}',
    b'  {"a": 1, "a": 2}  ',
    b'{"big": 123456789012345678901234567890, "e": 1E+2, "z": -0.0}',
    '{"text": "caf\u00e9 \u2014 \U0001f600"}'.encode(),
    b'\xef\xbb\xbf{"bom": true}',  # a byte-order mark
    b'{"not_a_number": NaN}',
    b'{"lone": "\\ud800"}',
    '{"utf16": 1}'.encode("utf-16"),
    b'{"truncated": ',
    b"[1, 2]",
    b'"a string"',
    b"",
    b"\xff\xfe garbage",
]


def standard(data: bytes) -> object:
    try:
        value = json.loads(data, parse_float=Decimal)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.mark.parametrize("data", CASES)
def test_every_body_decodes_as_the_standard_library_would(data: bytes) -> None:
    assert load_json(data) == standard(data)


def test_decimals_stay_exact() -> None:
    parsed = load_json(b'{"cost": 0.1, "tokens": 3}')
    assert parsed == {"cost": Decimal("0.1"), "tokens": 3}
    assert isinstance(parsed["cost"], Decimal)
    assert type(parsed["tokens"]) is int
