"""A stream signal's per-event check (byte counts first, then the pattern) decides exactly
as the pattern alone, for keys with and without values, nulls written any way, and keys
inside strings."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from p402.instrumentation.formats import Signal

FRAGMENTS = [
    b'"usage"',
    b'"usage":null',
    b'"usage": null',
    b'"usage" :{"prompt_tokens":1}',
    b'"usage":{}',
    b'"finish_reason"',
    b'"finish_reason":null',
    b'"finish_reason":"stop"',
    b'"finish_reason" : "length"',
    b'"finish_reason":\n"stop"',
    b'"finishReason"',
    b'"finishReason":"STOP"',
    b'\\"usage\\":1',
    b":",
    b"null",
    b",",
    b"{",
    b"}",
    b" ",
    b"x",
    b'"',
]


def _pattern(keys: tuple[str, ...], non_null: bool) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(key.encode()) for key in keys)
    value = rb"\s*:\s*[^\sn]" if non_null else b""
    return re.compile(rb'"(?:' + names + rb')"' + value)


SIGNALS = [
    (("usage", "finish_reason"), True),
    (("finishReason",), False),
    (("usage",), False),
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12))
def test_the_check_decides_as_the_pattern(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for keys, non_null in SIGNALS:
        signal = Signal(*keys, non_null=non_null)
        expected = _pattern(keys, non_null).search(data) is not None
        assert (signal.find(data) is not None) == expected, (keys, data)
        assert signal.search(data) == expected


def test_usual_chat_chunks() -> None:
    signal = Signal("usage", "finish_reason", non_null=True)
    content = b'{"choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}'
    finish = b'{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}'
    usage = b'{"choices":[],"usage":{"prompt_tokens":25}}'
    spaced = b'{"choices": [{"finish_reason": null}], "usage": null}'
    assert signal.find(content) is None
    assert signal.find(finish) is not None
    assert signal.find(usage) is not None
    assert signal.find(spaced) is None
