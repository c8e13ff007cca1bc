"""Reading a response body as the application consumes it.

The application's byte stream is wrapped, never read ahead: each chunk passes through and a
decoded copy (content-encoding undone by a private decoder) goes to a reader that keeps only
what metering needs, so memory stays flat in the stream's length. The event is finished when
the stream is exhausted, closed early, or fails.

Readers: :class:`SseReader` (server-sent events, any line ending; comment lines ignored),
:class:`JsonArrayReader` (a JSON array streamed one object at a time, Gemini's default) and
:class:`JsonBodyReader` (an ordinary JSON body read in chunks).

When P402 added ``stream_options.include_usage`` to a request, the usage-only chunk it
causes is taken out of the application's view: the wrapper then forwards decoded, filtered
bytes and the response no longer declares a content-encoding.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache, partial
from typing import Any, Final, Protocol

from p402.instrumentation._metering import Exchange, load_json
from p402.instrumentation._recorder import Recorder
from p402.instrumentation.formats import StreamAccumulator

__all__ = ["JsonArrayReader", "JsonBodyReader", "SseReader", "tap_response"]

MAX_BUFFERED_JSON_BYTES: Final = 16 * 1024 * 1024
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
HANDOFF_BYTES: Final = 64 * 1024

_log = logging.getLogger(__name__)

# A blank line: two line terminators in a row, where a lone CR is not the start of CRLF.
_BLANK_LINE: Final = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
_JSON_TOKEN: Final = re.compile(rb'[{}\[\]"\\]')


class BodyReader(Protocol):
    def feed(self, chunk: bytes) -> bytes:
        """Read a decoded chunk; returns the bytes the application should see of it."""

    def close(self, *, complete: bool) -> bytes:
        """End of body (``complete`` when read to the end); returns any held-back bytes."""


class JsonBodyReader:
    """A non-streamed body read in chunks (``send(stream=True)``): parsed once complete."""

    __slots__ = ("_chunks", "_exchange", "_size", "_status")

    def __init__(self, exchange: Exchange, status_code: int) -> None:
        self._exchange = exchange
        self._status = status_code
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self._size <= MAX_BUFFERED_JSON_BYTES:
            self._chunks.append(chunk)
        return chunk

    def close(self, *, complete: bool) -> bytes:
        if complete and self._size <= MAX_BUFFERED_JSON_BYTES:
            self._exchange.finish_with_body(self._status, b"".join(self._chunks))
        else:
            self._exchange.finish_unread(self._status)
        return b""


class _StreamReader:
    """Shared ending of the streaming readers."""

    def __init__(self, exchange: Exchange, status_code: int, accumulator: StreamAccumulator):
        self._exchange = exchange
        self._status = status_code
        self._accumulator = accumulator
        # The latest event the accumulator did not ask for, read at the end after all: it
        # holds the latest cumulative figures of formats that repeat them.
        self._skipped: tuple[str | None, bytes] | None = None

    def _finish(self, complete: bool) -> None:
        if self._skipped is not None:
            name, payload = self._skipped
            parsed = load_json(payload)
            if isinstance(parsed, dict):
                self._accumulator.on_event(name, parsed)
        self._exchange.finish_stream(self._status, self._accumulator, complete=complete)


def _separator_of(buffer: bytes) -> bytes | None:
    """The blank line a stream uses between events, once one has been seen."""
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    if crlf == -1 and lf == -1:
        return None
    return b"\r\n\r\n" if lf == -1 or -1 < crlf < lf else b"\n\n"


def _only_ending(buffer: bytes, separator: bytes) -> bool:
    """Whether ``buffer`` uses only the line ending of ``separator`` (so splitting is safe)."""
    if separator == b"\n\n":
        return b"\r" not in buffer
    return b"\n\n" not in buffer and buffer.count(b"\r") == buffer.count(b"\r\n")


class SseReader(_StreamReader):
    """Server-sent events, parsed incrementally; ``hide`` drops events from the app's view."""

    def __init__(
        self,
        exchange: Exchange,
        status_code: int,
        accumulator: StreamAccumulator,
        hide: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(exchange, status_code, accumulator)
        self._hide = hide
        self._buffer = b""
        self._separator: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer + chunk
        if self._separator is None:
            self._separator = _separator_of(buffer)
        separator = self._separator
        if separator is not None and _only_ending(buffer, separator):
            # The usual case: one kind of line ending throughout, split at C speed.
            *events, self._buffer = buffer.split(separator)
            kept = [event for event in events if self._event(event)]
            if len(kept) == len(events):
                return buffer[: len(buffer) - len(self._buffer)]
            return b"".join(event + separator for event in kept)
        forwarded: list[bytes] = []
        start = 0
        while match := _BLANK_LINE.search(buffer, start):
            if match.end() == len(buffer) and buffer.endswith(b"\r"):
                break  # maybe the first half of a CRLF: wait for the next chunk
            if self._event(buffer[start : match.start()]):
                forwarded.append(buffer[start : match.end()])
            start = match.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:  # not SSE after all: stop holding it
            forwarded.append(self._buffer)
            self._buffer = b""
        return b"".join(forwarded)

    def close(self, *, complete: bool) -> bytes:
        rest, self._buffer = self._buffer, b""
        if rest.strip() and complete and not self._event(rest):
            rest = b""
        self._finish(complete)
        return rest

    def _event(self, raw: bytes) -> bool:
        """Read one event; whether the application should see it."""
        name: str | None = None
        if raw.startswith(b"data: ") and b"\n" not in raw and b"\r" not in raw:
            payload = raw[6:]  # the usual event: one data line
        else:
            data: list[bytes] = []
            for line in raw.splitlines():
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                elif line.startswith(b"event:"):
                    value = line[7:] if line[6:7] == b" " else line[6:]
                    name = value.decode("utf-8", "replace")
            if not data:
                return True
            payload = data[0] if len(data) == 1 else b"\n".join(data)
        if payload.strip() == b"[DONE]":
            self._accumulator.finished = True
            return True
        if not self._accumulator.wants(name, payload):
            self._skipped = (name, payload)
            return True
        self._skipped = None
        parsed = load_json(payload)
        if not isinstance(parsed, dict):
            return True
        self._accumulator.on_event(name, parsed)
        return not (self._hide and self._hide(parsed))


class JsonArrayReader(_StreamReader):
    """A JSON array streamed element by element: each top-level object is one event."""

    def __init__(self, exchange: Exchange, status_code: int, accumulator: StreamAccumulator):
        super().__init__(exchange, status_code, accumulator)
        self._depth = 0
        self._in_string = False
        self._escaped_at: int | None = None  # index in the chunk of an escaped character
        self._current = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        position = 0
        for match in _JSON_TOKEN.finditer(chunk):
            token = match.group()
            index = match.start()
            if index == self._escaped_at:
                continue
            if self._in_string:
                if token == b"\\":
                    self._escaped_at = index + 1
                elif token == b'"':
                    self._in_string = False
                continue
            if token == b'"':
                self._in_string = True
            elif token in b"{[":
                if self._depth == 1 and token == b"{":
                    position = index
                    self._current.clear()
                self._depth += 1
            elif token in b"}]":
                self._depth -= 1
                if self._depth == 1 and token == b"}":
                    self._current += chunk[position : index + 1]
                    self._element(bytes(self._current))
                    self._current.clear()
                    position = len(chunk)
        self._escaped_at = 0 if self._escaped_at == len(chunk) else None
        if self._depth >= 2:
            self._current += chunk[position:]
        return chunk

    def _element(self, raw: bytes) -> None:
        if not self._accumulator.wants(None, raw):
            self._skipped = (None, raw)
            return
        self._skipped = None
        payload = load_json(raw)
        if isinstance(payload, dict):
            self._accumulator.on_event(None, payload)

    def close(self, *, complete: bool) -> bytes:
        self._finish(complete)
        return b""


def body_reader_for(exchange: Exchange, response: Any) -> BodyReader:
    status = response.status_code
    content_type = response.headers.get("content-type", "").lower()
    if status >= 400:
        return JsonBodyReader(exchange, status)
    accumulator = exchange.format.stream_accumulator(
        exchange.endpoint, collect_text=exchange.captures_content
    )
    if content_type.startswith("text/event-stream"):
        return SseReader(exchange, status, accumulator, exchange.hide_event)
    if exchange.endpoint.streams and content_type.startswith("application/json"):
        return JsonArrayReader(exchange, status, accumulator)
    return JsonBodyReader(exchange, status)


class _Tap:
    """Feeds a decoded copy of each chunk to a reader.

    Inline (``rewrite``), the reader runs on the application's path and its output replaces
    the chunk. Otherwise the chunks are only collected there and handed to the recorder
    thread every :data:`HANDOFF_BYTES`, which decodes and reads them in order: the application
    pays for a list append per chunk, and memory stays bounded by the hand-off size.
    """

    __slots__ = (
        "_decoder",
        "_done",
        "_exchange",
        "_pending",
        "_pending_size",
        "_reader",
        "_recorder",
        "rewrite",
    )

    def __init__(
        self, exchange: Exchange, reader: BodyReader, decoder: Any, *, rewrite: bool
    ) -> None:
        self._exchange = exchange
        self._reader = reader
        self._decoder = decoder
        self._recorder: Recorder = exchange.meter.recorder
        self._done = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.rewrite = rewrite

    def feed(self, raw: bytes) -> bytes:
        if self._done:
            return raw
        if not self.rewrite:
            self._pending.append(raw)
            self._pending_size += len(raw)
            if self._pending_size >= HANDOFF_BYTES:
                pieces, self._pending, self._pending_size = self._pending, [], 0
                self._recorder.submit(partial(self._read, pieces))
            return raw
        try:
            return b"".join(self._read_now(raw))
        except Exception:
            # Metering must never break the application's stream: stop reading it.
            _log.exception("P402 could not read a response stream; its usage is missing")
            self._done = True
            self._reader.close(complete=False)
            return raw

    def _read_now(self, raw: bytes) -> list[bytes]:
        # httpx decoders return bytes; httpx2 decoders yield them.
        decoded = self._decoder.decode(raw)
        pieces = [decoded] if isinstance(decoded, bytes) else decoded
        return [self._reader.feed(piece) for piece in pieces if piece]

    def _read(self, raws: list[bytes]) -> None:
        """On the recorder thread: decode and read collected chunks."""
        if self._done:
            return
        try:
            for raw in raws:
                self._read_now(raw)
        except Exception:
            _log.exception("P402 could not read a response stream; its usage is missing")
            self._done = True
            self._reader.close(complete=False)

    def _close(self, complete: bool) -> bytes:
        forwarded: list[bytes] = []
        try:
            if complete:
                flushed = self._decoder.flush()
                pieces = [flushed] if isinstance(flushed, bytes) else list(flushed)
                forwarded = [self._reader.feed(piece) for piece in pieces if piece]
        except Exception:
            _log.exception("P402 could not finish reading a response stream")
            complete = False
        forwarded.append(self._reader.close(complete=complete))
        return b"".join(forwarded)

    def _finish_later(self, pieces: list[bytes], complete: bool) -> None:
        self._read(pieces)
        if not self._done:
            self._done = True
            self._close(complete)

    def end(self, *, complete: bool) -> bytes:
        if self._done:
            return b""
        if not self.rewrite:
            self._exchange.ended_ns = time.time_ns()
            pieces, self._pending = self._pending, []
            self._recorder.submit(partial(self._finish_later, pieces, complete))
            return b""
        self._done = True
        return self._close(complete)


class _TappedSync:
    """Wraps a ``SyncByteStream``; mixed into each client library's own stream base."""

    def __init__(self, inner: Any, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    def __iter__(self) -> Iterator[bytes]:
        complete = False
        try:
            for chunk in self._inner:
                forwarded = self._tap.feed(chunk)
                if forwarded:
                    yield forwarded
            complete = True
        finally:
            rest = self._tap.end(complete=complete)
        if rest:
            yield rest

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tap.end(complete=False)


class _TappedAsync:
    """Wraps an ``AsyncByteStream``; mixed into each client library's own stream base."""

    def __init__(self, inner: Any, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        complete = False
        try:
            async for chunk in self._inner:
                forwarded = self._tap.feed(chunk)
                if forwarded:
                    yield forwarded
            complete = True
        finally:
            rest = self._tap.end(complete=complete)
        if rest:
            yield rest

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._tap.end(complete=False)


class _Identity:
    """The decoder of a body sent without content-encoding."""

    @staticmethod
    def decode(data: bytes) -> bytes:
        return data

    @staticmethod
    def flush() -> bytes:
        return b""


_IDENTITY: Final = _Identity()


@cache
def _wrapper_class(base: type, is_async: bool) -> type:
    # iter_raw()/close() check isinstance(stream, SyncByteStream) of their own module.
    mixin = _TappedAsync if is_async else _TappedSync
    return type(mixin.__name__.lstrip("_") + "Stream", (mixin, base), {})


def tap_response(exchange: Exchange, response: Any, *, is_async: bool) -> None:
    """Wrap ``response.stream`` so the exchange finishes as the application reads it."""
    reader = body_reader_for(exchange, response)
    # A private decoder of the response's own content-encoding, independent of the one
    # the application's reads use.
    if response.headers.get("content-encoding", "identity") == "identity":
        decoder = _IDENTITY
    else:
        decoder = type(response)(200, headers=response.headers)._get_content_decoder()
    rewrite = exchange.hide_event is not None and isinstance(reader, SseReader)
    if rewrite and "content-encoding" in response.headers:
        del response.headers["content-encoding"]
    module = sys.modules[type(response).__module__.split(".")[0]]
    base = module.AsyncByteStream if is_async else module.SyncByteStream
    tap = _Tap(exchange, reader, decoder, rewrite=rewrite)
    response.stream = _wrapper_class(base, is_async)(response.stream, tap)
