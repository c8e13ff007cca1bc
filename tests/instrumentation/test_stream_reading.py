"""The stream readers read the same facts however a stream is cut, framed or scanned.

A plain reference reads every event of a stream (any line ending, comments, multi-line data,
named events) and gives each one to the accumulator. The reader only decodes the events that
can matter, splits small pieces and scans large ones: it must end with the same facts, the
same end-of-response flag, and hand the application the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p402.instrumentation import _streams
from p402.instrumentation._json import load_json
from p402.instrumentation._streams import AwsEventStreamReader, SseReader
from p402.instrumentation.formats import FORMATS, Endpoint, ResponseFacts, StreamAccumulator
from p402.instrumentation.formats.anthropic import MESSAGES
from p402.instrumentation.formats.gemini import STREAM_GENERATE
from p402.instrumentation.formats.openai import CHAT_COMPLETIONS, RESPONSES, is_usage_only_chunk
from p402.instrumentation.testing import fixture_bytes
from p402.instrumentation.testing.standin import as_aws_event_stream
from p402.instrumentation.vocabulary import ApiFormat

STREAMS = {
    "openai_chat_stream.sse": (ApiFormat.OPENAI, CHAT_COMPLETIONS),
    "openai_responses_stream.sse": (ApiFormat.OPENAI, RESPONSES),
    "anthropic_messages_stream.sse": (ApiFormat.ANTHROPIC, MESSAGES),
    "gemini_stream.sse": (ApiFormat.GEMINI, STREAM_GENERATE),
}
CHAT = STREAMS["openai_chat_stream.sse"]


class Finished:
    """Stands in for the exchange: keeps what the reader finished with."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def finish_stream(self, status: int, accumulator: Any, *, complete: bool) -> None:
        self.calls.append((status, complete))


def accumulator(kind: tuple[ApiFormat, Endpoint]) -> StreamAccumulator:
    api_format, endpoint = kind
    return FORMATS[api_format].stream_accumulator(endpoint, collect_text=False)


def reference_events(stream: bytes) -> Iterator[tuple[str | None, bytes]]:
    """Every event of ``stream`` with data, by the letter of the SSE format."""
    name: str | None = None
    data: list[bytes] = []
    # A CR at the very end may be the first half of a CRLF: the line is not known to end.
    *lines, _unfinished = re.split(rb"\r\n|\n|\r", stream.removesuffix(b"\r"))
    for line in lines:
        if not line:
            if data:
                yield name, b"\n".join(data)
            name, data = None, []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = (line[7:] if line[6:7] == b" " else line[6:]).decode()


def reference(stream: bytes, kind: tuple[ApiFormat, Endpoint]) -> tuple[ResponseFacts, bool]:
    """The facts when every event is decoded and read, in order."""
    reader = accumulator(kind)
    for name, payload in reference_events(stream):
        if payload.strip() == b"[DONE]":
            reader.finished = True
            continue
        parsed = load_json(payload)
        if isinstance(parsed, dict):
            reader.on_event(name, parsed)
    return reader.facts(), reader.finished


def read(
    stream: bytes,
    kind: tuple[ApiFormat, Endpoint],
    cuts: list[int],
    hide: Any = None,
    *,
    complete: bool = True,
) -> tuple[ResponseFacts, bool, bytes, Finished]:
    """Feed ``stream`` cut at ``cuts``; returns facts, end flag, forwarded bytes, ending."""
    ending = Finished()
    stream_accumulator = accumulator(kind)
    reader = SseReader(ending, 200, stream_accumulator, hide)  # type: ignore[arg-type]
    forwarded = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        if cut > start:
            forwarded.append(reader.feed(stream[start:cut]))
            start = cut
    forwarded.append(reader.close(complete=complete))
    return stream_accumulator.facts(), stream_accumulator.finished, b"".join(forwarded), ending


def chunked(stream: bytes, size: int) -> list[int]:
    return list(range(size, len(stream), size))


def crlf(stream: bytes) -> bytes:
    return stream.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def lf(stream: bytes) -> bytes:
    return stream.replace(b"\r\n", b"\n")


@pytest.fixture(params=["split", "scan", "array"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ways of reading a piece: split into events, scanned for the marked ones, or (when
    it holds nothing but one-line data events) decoded at once as one JSON array."""
    if request.param == "array":
        monkeypatch.setattr(_streams, "ARRAY_BYTES", 1 << 30)
    else:
        monkeypatch.setattr(_streams, "ARRAY_BYTES", 0)
    if request.param == "scan":
        monkeypatch.setattr(_streams, "SCAN_BYTES", 0)
    return str(request.param)


@pytest.mark.parametrize("fixture", sorted(STREAMS))
@pytest.mark.parametrize("framing", [lf, crlf])
@pytest.mark.parametrize("size", [1, 2, 7, 97, 512, 1 << 20])
def test_every_fixture_reads_the_reference_facts_however_it_is_cut(
    way: str, fixture: str, framing: Callable[[bytes], bytes], size: int
) -> None:
    stream = framing(fixture_bytes(fixture))
    facts, finished, forwarded, ending = read(stream, STREAMS[fixture], chunked(stream, size))
    assert (facts, finished) == reference(stream, STREAMS[fixture])
    assert facts.usage.measured
    assert forwarded == stream
    assert ending.calls == [(200, True)]


def chat_chunk(
    index: int = 0,
    content: str | None = "x",
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    *,
    spaced: bool = False,
    choices: bool = True,
    ids: bool = True,
) -> bytes:
    chunk: dict[str, Any] = {"object": "chat.completion.chunk"}
    if ids:
        chunk |= {"id": "chatcmpl-1", "model": "gpt-4.1-mini-2025-04-14"}
    chunk["choices"] = (
        [{"index": index, "delta": {"content": content}, "finish_reason": finish}]
        if choices
        else []
    )
    chunk["usage"] = usage
    return json.dumps(chunk, separators=(", ", ": ") if spaced else (",", ":")).encode()


USAGE = {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34}


def long_chat_stream(chunks: int, *, usage: bool = True) -> bytes:
    """Two choices, spaced and compact JSON, comments, a named event, multi-line data."""
    events = [b"data: " + chat_chunk(content="")]
    for i in range(chunks):
        events.append(b"data: " + chat_chunk(index=i % 2, spaced=i % 5 == 0))
        if i % 50 == 0:
            events.append(b": keep-alive")
        if i % 70 == 0:
            events.append(b"event: chunk\ndata: " + chat_chunk(index=1))
    events.append(b"data: " + chat_chunk(index=1, content=None, finish="length", spaced=True))
    events.append(b"data: " + chat_chunk(index=0, content=None, finish="stop"))
    if usage:
        multi_line = chat_chunk(choices=False, usage=USAGE)
        multi_line = multi_line.replace(b',"usage"', b',\ndata: "usage"')
        events.append(b"data: " + multi_line)
    events.append(b"data: [DONE]")
    return b"\n\n".join(events) + b"\n\n"


@pytest.mark.parametrize("framing", [lf, crlf])
@pytest.mark.parametrize("size", [97, 4096, 1 << 20])
def test_a_long_stream_reads_the_reference_facts(
    way: str, framing: Callable[[bytes], bytes], size: int
) -> None:
    stream = framing(long_chat_stream(400))
    assert len(stream) > _streams.SCAN_BYTES  # fed whole, it is scanned either way
    facts, finished, forwarded, _ = read(stream, CHAT, chunked(stream, size))
    assert (facts, finished) == reference(stream, CHAT)
    assert facts.finish_reasons == ("stop", "length")
    assert facts.usage.input_tokens == 25
    assert forwarded == stream


def test_hidden_usage_chunk_is_cut_out_of_what_the_application_sees(way: str) -> None:
    stream = long_chat_stream(200, usage=False)
    usage_event = b"data: " + chat_chunk(choices=False, usage=USAGE) + b"\n\n"
    stream = stream.replace(b"data: [DONE]", usage_event + b"data: [DONE]")
    expected = stream.replace(usage_event, b"")
    for size in (1, 97, 1 << 20):
        facts, _, forwarded, _ = read(stream, CHAT, chunked(stream, size), is_usage_only_chunk)
        assert forwarded == expected
        assert facts.usage.input_tokens == 25


def long_gemini_stream(chunks: int) -> bytes:
    """Cumulative usage on every chunk, CRLF, the finish reason on the last one."""
    events = []
    for i in range(chunks + 1):
        candidate: dict[str, Any] = {"content": {"parts": [{"text": "x"}], "role": "model"}}
        if i == chunks:
            candidate["finishReason"] = "STOP"
        chunk = {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": i + 1},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r-1",
        }
        events.append(b"data: " + json.dumps(chunk).encode())
    return b"\r\n\r\n".join(events) + b"\r\n\r\n"


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["chat", "gemini"]),
    chunks=st.integers(0, 150),
    cuts=st.lists(st.integers(0, 60_000), max_size=12),
    stop_at=st.integers(0, 60_000),
)
def test_any_cut_and_any_early_end_read_the_events_before_it(
    kind: str, chunks: int, cuts: list[int], stop_at: int
) -> None:
    """A stream that breaks off reads the events completed (by a blank line) before."""
    if kind == "chat":
        stream, stream_kind = long_chat_stream(chunks), CHAT
    else:
        stream, stream_kind = long_gemini_stream(chunks), STREAMS["gemini_stream.sse"]
    stop = min(stop_at, len(stream))
    stream = stream[:stop]
    pieces = [cut for cut in cuts if cut < stop]
    for scan_bytes in (0, 1 << 30):  # scanned, split
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_streams, "SCAN_BYTES", scan_bytes)
            facts, finished, _, _ = read(stream, stream_kind, pieces, complete=False)
        assert (facts, finished) == reference(stream, stream_kind)


@pytest.mark.parametrize("fixture", sorted(STREAMS))
def test_a_last_event_without_its_blank_line_counts_when_the_stream_ends(
    way: str, fixture: str
) -> None:
    stream = fixture_bytes(fixture).rstrip(b"\r\n")
    facts, finished, forwarded, _ = read(stream, STREAMS[fixture], chunked(stream, 97))
    assert (facts, finished) == reference(stream + b"\n\n", STREAMS[fixture])
    assert forwarded == stream


def test_the_model_and_id_of_the_first_chunk_count_when_no_later_chunk_names_them(way: str) -> None:
    events = [
        b"data: " + chat_chunk(content=""),
        *(b"data: " + chat_chunk(ids=False) for _ in range(5)),
        b"data: " + chat_chunk(content=None, finish="stop", ids=False),
        b"data: " + chat_chunk(choices=False, usage=USAGE, ids=False),
        b"data: [DONE]",
    ]
    stream = b"\n\n".join(events) + b"\n\n"
    facts, finished, _, _ = read(stream, CHAT, [])
    assert (facts, finished) == reference(stream, CHAT)
    assert (facts.model, facts.response_id) == ("gpt-4.1-mini-2025-04-14", "chatcmpl-1")


def test_a_stream_cut_after_its_first_chunk_keeps_its_model_and_id(way: str) -> None:
    stream = b"data: " + chat_chunk(content="") + b"\n\n" + b"data: " + chat_chunk()[:20]
    ending = Finished()
    stream_accumulator = accumulator(CHAT)
    reader = SseReader(ending, 200, stream_accumulator)  # type: ignore[arg-type]
    reader.feed(stream)
    reader.close(complete=False)
    facts = stream_accumulator.facts()
    assert (facts.model, facts.response_id) == ("gpt-4.1-mini-2025-04-14", "chatcmpl-1")
    assert not facts.usage.measured
    assert ending.calls == [(200, False)]


@pytest.mark.parametrize("framing", [lf, crlf])
def test_done_in_an_event_text_and_an_event_only_the_standard_decoder_reads(
    way: str, framing: Callable[[bytes], bytes]
) -> None:
    """A chunk whose text holds ``[DONE]`` is an event like the others, and a usage chunk
    the fast decoder refuses (a byte-order mark) is read the long way, as in the reference."""
    events = [b"data: " + chat_chunk(content="")]
    events += [b"data: " + chat_chunk(content=f"part {i} [DONE]") for i in range(40)]
    events.append(b"data: " + chat_chunk(content=None, finish="stop"))
    events.append(b"data: \xef\xbb\xbf" + chat_chunk(choices=False, usage=USAGE))
    events.append(b"data: [DONE]")
    stream = framing(b"\n\n".join(events) + b"\n\n")
    assert len(stream) > _streams.SCAN_BYTES
    for cuts in ([], chunked(stream, 97)):
        facts, finished, forwarded, _ = read(stream, CHAT, cuts)
        assert (facts, finished) == reference(stream, CHAT)
        assert (facts.finish_reasons, facts.usage.input_tokens, finished) == (("stop",), 25, True)
        assert forwarded == stream


class _Name(str):
    """A string of another type than ``str`` (what the type checks fast paths skip)."""


def test_chat_chunks_are_read_whatever_the_types_of_their_values() -> None:
    stream_accumulator = accumulator(CHAT)
    stream_accumulator.on_event(
        None,
        {
            "model": _Name("gpt-4.1-mini"),
            "id": "",
            "choices": [
                {"index": 1, "finish_reason": "length"},
                {"index": Decimal("0"), "finish_reason": _Name("stop")},
                "not a choice",
                {"index": 2, "finish_reason": ""},
                {"index": True, "finish_reason": None},
            ],
        },
    )
    stream_accumulator.on_event(
        None, {"model": "", "id": "chatcmpl-2", "choices": None, "usage": USAGE}
    )
    facts = stream_accumulator.facts()
    assert (facts.model, facts.response_id) == ("gpt-4.1-mini", "chatcmpl-2")
    assert facts.finish_reasons == ("stop", "length")  # by choice index
    assert (facts.usage.input_tokens, facts.usage.cache_write_tokens) == (25, 0)


PRICED_USAGE = USAGE | {"cost": 0.0001234}  # OpenRouter's: a decimal, exactly


def _one_by_one_refused(*args: Any) -> Any:
    raise AssertionError("the piece was read event by event")


@pytest.mark.parametrize("framing", [lf, crlf])
def test_a_short_run_of_data_lines_is_read_at_once(
    monkeypatch: pytest.MonkeyPatch, framing: Callable[[bytes], bytes]
) -> None:
    """A chat stream of one-line ``data:`` events under :data:`ARRAY_BYTES` is decoded as one
    JSON array, with the facts and the end flag of the event-by-event reading."""
    monkeypatch.setattr(SseReader, "_read_each", _one_by_one_refused)
    monkeypatch.setattr(SseReader, "_read_marked", _one_by_one_refused)
    for stream in (
        framing(fixture_bytes("openai_chat_stream.sse")),
        framing(
            b"\n\n".join(
                [
                    b"data: " + chat_chunk(index=0, spaced=True),
                    b"data: " + chat_chunk(index=1),
                    b"data: " + chat_chunk(index=1, content=None, finish="length", spaced=True),
                    b"data: " + chat_chunk(index=0, content=None, finish="stop"),
                    b"data: " + chat_chunk(choices=False, usage=PRICED_USAGE, spaced=True),
                    b"data: [DONE]\n\n",
                ]
            )
        ),
        framing(b"data: " + chat_chunk(content="no end yet") + b"\n\n"),
        framing(b"data: [DONE]\n\n"),
    ):
        assert len(stream) <= _streams.ARRAY_BYTES
        facts, finished, forwarded, _ = read(stream, CHAT, [])
        assert (facts, finished) == reference(stream, CHAT)
        assert forwarded == stream
        if b'"cost"' in stream:
            assert facts.provider_cost == Decimal("0.0001234")


@pytest.mark.parametrize(
    "odd",
    [
        b'{"id":"chatcmpl-2","choices":[{"index":1.0,"finish_reason":"length"}]}',  # a float
        b'{"model":5,"choices":[{"index":0,"finish_reason":"stop"}]}',  # not a string
        b'{"choices":"none","usage":[1]}',  # neither a list nor an object
        b"[1, 2]",  # not an object
        b"",  # no data
    ],
)
def test_a_run_the_typed_reading_refuses_is_read_event_by_event(odd: bytes) -> None:
    events = [b"data: " + chat_chunk(content="Paris"), b"data: " + odd]
    events += [b"data: " + chat_chunk(content=None, finish="stop")]
    events += [b"data: " + chat_chunk(choices=False, usage=USAGE), b"data: [DONE]"]
    stream = b"\n\n".join(events) + b"\n\n"
    facts, finished, _, _ = read(stream, CHAT, [])
    assert (facts, finished) == reference(stream, CHAT)
    assert (facts.usage.input_tokens, finished) == (25, True)


def _first_blank_line(buffer: bytes) -> bytes | None:
    """The blank line that comes first, LF or CRLF, by the letter."""
    found = [(at, blank) for blank in (b"\n\n", b"\r\n\r\n") if (at := buffer.find(blank)) != -1]
    return min(found)[1] if found else None


@given(st.text(alphabet="\r\nx", max_size=40).map(str.encode))
@settings(max_examples=500)
def test_the_separator_is_the_first_blank_line(buffer: bytes) -> None:
    assert _streams._separator_of(buffer) == _first_blank_line(buffer)


def _read_aws(stream: bytes, size: int) -> tuple[ResponseFacts, bool, Finished]:
    ending = Finished()
    anthropic = accumulator(STREAMS["anthropic_messages_stream.sse"])
    reader = AwsEventStreamReader(ending, 200, anthropic)  # type: ignore[arg-type]
    for start in range(0, len(stream), size):
        assert reader.feed(stream[start : start + size]) == stream[start : start + size]
    reader.close(complete=True)
    return anthropic.facts(), anthropic.finished, ending


@pytest.mark.parametrize("size", [1, 7, 97, 1 << 20])
def test_a_bedrock_event_stream_reads_the_facts_of_its_events_however_it_is_cut(size: int):
    sse = fixture_bytes("anthropic_messages_stream.sse")
    facts, finished, ending = _read_aws(as_aws_event_stream(sse), size)
    assert (facts, finished) == reference(sse, STREAMS["anthropic_messages_stream.sse"])
    assert ending.calls == [(200, True)]


def test_a_bedrock_message_that_fails_its_checksum_ends_the_reading_as_incomplete():
    stream = bytearray(as_aws_event_stream(fixture_bytes("anthropic_messages_stream.sse")))
    stream[40] ^= 0xFF  # inside the first message's payload: its CRC no longer matches
    facts, _, ending = _read_aws(bytes(stream), 97)
    assert facts.usage.input_tokens is None  # nothing read after the broken message
    assert ending.calls == [(200, False)]
