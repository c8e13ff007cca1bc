"""The JSON bodies routes read themselves: exact numbers, and NUL refused however the JSON
text spells it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from p402.api.errors import ApiError
from p402.api.routes.json_bodies import json_document


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"name": "a\x00b"}).encode(),  # the escape \u0000
        json.dumps({"a\x00": 1}).encode(),  # in a key
        json.dumps([{"deep": ["x", "\x00"]}]).encode(),
        json.dumps({"name": "a\x00b"}).encode("utf-16"),  # JSON in UTF-16
        json.dumps({"name": "a\x00b"}).encode("utf-32-le"),
    ],
)
def test_nul_in_any_text_is_refused(body):
    with pytest.raises(ApiError) as refused:
        json_document(body)
    assert refused.value.status_code == 400
    assert "NUL" in refused.value.detail


def test_an_escaped_backslash_before_u0000_is_text_not_nul():
    assert json_document(b'{"path": "C:\\\\u0000"}') == {"path": "C:\\u0000"}


def test_numbers_are_exact_and_text_without_nul_passes():
    assert json_document(json.dumps({"usd": 0.1, "name": "é"}).encode("utf-16")) == {
        "usd": Decimal("0.1"),
        "name": "é",
    }
