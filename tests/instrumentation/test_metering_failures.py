"""Metering never breaks the application's call: a failure of P402 itself is logged and the
call goes on unmetered; before the call, an enforcing ``fail_mode=closed`` raises it instead,
and the call does not leave."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from openai import OpenAI

from p402.instrumentation import P402Instrumentor, _metering, _patches


@pytest.fixture(autouse=True)
def nothing_logged_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a process that has logged no failure (its first is in full)."""
    monkeypatch.setattr(_patches, "_logged", set())


@pytest.fixture
def broken_request_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(request: object) -> bytes:
        raise RuntimeError("cannot read the request")

    monkeypatch.setattr(_metering, "_request_content", fail)


@pytest.fixture
def closed_strict(spans, standin) -> Iterator[None]:
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider,
        providers=f"openai={standin.url('/v1')}",
        endpoint="http://127.0.0.1:9",
        enforcement="strict",
        fail_mode="closed",
    )
    yield
    instrumentor.uninstrument()


def _chat(standin) -> str | None:
    with OpenAI(base_url=standin.url("/v1"), api_key="test", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
        )
    return completion.id


def test_a_failure_before_the_call_is_logged_and_the_call_goes_on(
    instrument, spans, standin, broken_request_reading, caplog
):
    with caplog.at_level(logging.ERROR, logger="p402.instrumentation._patches"):
        assert _chat(standin) == "chatcmpl-CZt9bQ1xWm7Lr2KpVd4nA8sEfGh3J"
        assert _chat(standin) == "chatcmpl-CZt9bQ1xWm7Lr2KpVd4nA8sEfGh3J"
    assert len(standin.requests) == 2
    (logged,) = caplog.records  # with its traceback once, not once per call
    assert "could not meter an LLM call (before it was sent)" in logged.getMessage()
    assert logged.exc_info is not None and "cannot read the request" in str(logged.exc_info[1])
    assert spans.all() == []


def test_a_failure_after_the_call_is_logged_and_the_response_returned(
    instrument, spans, standin, monkeypatch, caplog
):
    def fail(self: object, status_code: int, body: bytes) -> None:
        raise RuntimeError("cannot read the response")

    monkeypatch.setattr(_metering.Exchange, "finish_with_body", fail)
    with caplog.at_level(logging.ERROR, logger="p402.instrumentation._patches"):
        assert _chat(standin) == "chatcmpl-CZt9bQ1xWm7Lr2KpVd4nA8sEfGh3J"
    assert "(after it was sent)" in caplog.records[0].getMessage()


def test_with_enforcement_failing_closed_the_failure_is_raised_and_nothing_sent(
    closed_strict, standin, broken_request_reading
):
    with pytest.raises(RuntimeError, match="cannot read the request"):
        _chat(standin)
    assert standin.requests == []
