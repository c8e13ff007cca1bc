"""Reading a response body as the application consumes it.

The application's byte stream is wrapped, never read ahead: each chunk passes through and a
decoded copy (content-encoding undone by a private decoder) goes to a reader that keeps only
what metering needs, so memory stays flat in the stream's length. The event is finished when
the stream is exhausted, closed early, or fails.

Readers: :class:`SseReader` (server-sent events, any line ending; comment lines ignored),
:class:`JsonArrayReader` (a JSON array streamed one object at a time, Gemini's default),
:class:`AwsEventStreamReader` (Bedrock's binary AWS event stream) and
:class:`JsonBodyReader` (an ordinary JSON body read in chunks).

When P402 added ``stream_options.include_usage`` to a request, the usage-only chunk it
causes is taken out of the application's view: the wrapper then forwards decoded, filtered
bytes and the response no longer declares a content-encoding.
"""

from __future__ import annotations

import base64
import logging
import re
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache, partial
from typing import Any, Final, Protocol

from p402.instrumentation._metering import Exchange, header_names, header_value, load_json
from p402.instrumentation._recorder import Recorder
from p402.instrumentation.formats import StreamAccumulator

__all__ = [
    "AWS_EVENT_STREAM",
    "AwsEventStreamReader",
    "JsonArrayReader",
    "JsonBodyReader",
    "SseReader",
    "tap_response",
]

MAX_BUFFERED_JSON_BYTES: Final = 16 * 1024 * 1024
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
SCAN_BYTES: Final = 1024
"""From this many bytes of events on, a piece is scanned for the events that matter rather
than split into all of its events."""
ARRAY_BYTES: Final = 8 * 1024
"""Up to this many bytes of events, a piece of one-line ``data:`` events is read as one JSON
array, when its accumulator can (beyond, scanning it costs less than decoding all of it)."""
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
    # Usually the first line ending is the start of the first blank line: found at C speed
    # (a one-byte search), where the searches below compare at every position.
    first = buffer.find(b"\n")
    if first == -1:
        return None
    if buffer.startswith(b"\n", first + 1):
        return b"\n\n"
    if first and buffer.startswith(b"\r\n", first + 1) and buffer[first - 1] == 0x0D:  # CR
        return b"\r\n\r\n"
    lf = buffer.find(b"\n\n")
    # Only a CRLF blank line before the first LF one counts: no need to look further.
    crlf = buffer.find(b"\r\n\r\n", 0, len(buffer) if lf == -1 else lf + 3)
    if crlf == -1 and lf == -1:
        return None
    return b"\r\n\r\n" if lf == -1 or -1 < crlf < lf else b"\n\n"


def _only_ending(buffer: bytes, separator: bytes) -> bool:
    """Whether ``buffer`` uses only the line ending of ``separator`` (so splitting is safe)."""
    # bytes.find, not ``in``: ``in`` first tries the needle as an int, at the cost of an error.
    if separator == b"\n\n":
        return buffer.find(b"\r") == -1
    return buffer.find(b"\n\n") == -1 and buffer.count(b"\r") == buffer.count(b"\r\n")


def _event_fields(raw: bytes) -> tuple[str | None, bytes | None]:
    """An event's name (its ``event:`` line) and data (its ``data:`` lines joined); data
    ``None`` when it has none (a comment, a keep-alive)."""
    if raw.startswith(b"data: ") and raw.find(b"\n") == -1 and raw.find(b"\r") == -1:
        return None, raw[6:]  # the usual event: one data line
    name: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            value = line[7:] if line[6:7] == b" " else line[6:]
            name = value.decode("utf-8", "replace")
    if not data:
        return name, None
    return name, data[0] if len(data) == 1 else b"\n".join(data)


def _is_done(payload: bytes) -> bool:
    return payload.strip() == b"[DONE]"


def _fields_of_one_ending(raw: bytes) -> tuple[str | None, bytes | None]:
    """:func:`_event_fields` of an event of a stream with one kind of line ending, where an
    event without ``"\n"`` is one line: a single ``data:`` line is read at once."""
    if raw.startswith(b"data: ") and raw.find(b"\n") == -1:
        return None, raw[6:]
    return _event_fields(raw)


class SseReader(_StreamReader):
    """Server-sent events, parsed incrementally; ``hide`` drops events from the app's view.

    Events are split at the stream's blank lines and read one by one. A large piece (a long
    stream handed over at once) is not split: once the accumulator names its ``signal``,
    only the events that carry it, or ``[DONE]``, are cut out and read, and of the others
    only the last one is kept, unparsed, for the end (see
    :class:`~p402.instrumentation.formats.StreamAccumulator`). A short piece of nothing but
    one-line ``data:`` events (a whole short chat stream) is read at once, as one JSON array,
    by accumulators that can. All ways read the same.
    """

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
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._separator is None:
            self._separator = _separator_of(buffer)
        separator = self._separator
        if separator is None or not _only_ending(buffer, separator):
            return self._feed_mixed(buffer)
        # One kind of line ending throughout: events are found at C speed.
        end = buffer.rfind(separator)
        if end == -1:
            self._buffer = buffer
            return self._release_oversized()
        read_to = end + len(separator)
        self._buffer = buffer[read_to:]
        # (Events the application should not see are cut out of what it is given: they are
        # read one by one.)
        read_all = None if end > ARRAY_BYTES or self._hide else self._accumulator.read_all
        if read_all is not None and self._read_all(buffer, end, separator, read_all):
            hidden = []
        elif end < SCAN_BYTES:
            hidden = self._read_each(buffer, end, separator)
        else:
            hidden = self._read_marked(buffer, end, separator)
        if hidden:
            kept, position = [], 0
            for start, stop in hidden:
                kept.append(buffer[position:start])
                position = stop
            kept.append(buffer[position:read_to])
            forwarded = b"".join(kept)
        else:
            forwarded = buffer[:read_to]
        if len(self._buffer) <= MAX_EVENT_BYTES:  # :meth:`_release_oversized`, inlined
            return forwarded
        return forwarded + self._release_oversized()

    def _read_all(
        self, buffer: bytes, end: int, separator: bytes, read_all: Callable[[bytes], bool]
    ) -> bool:
        """Read the events of ``buffer[:end]`` at once with ``read_all`` (see
        :attr:`~p402.instrumentation.formats.StreamAccumulator.read_all`), as one JSON array
        of their data, when they are all one ``data:`` line each."""
        if not buffer.startswith(b"data: "):
            return False
        joint = separator + b"data: "
        done = joint + b"[DONE]"
        if buffer.endswith(done, 0, end):
            array = b"[" + buffer[6 : end - len(done)].replace(joint, b",") + b"]"
        elif end == 12 and buffer.startswith(b"data: [DONE]"):
            array = b"[]"
        else:
            array = b"[" + buffer[6:end].replace(joint, b",") + b"]"
            done = b""
        # Every line ending was part of a separator before a data line: no names, comments,
        # blank lines or data on several lines (a JSON text has no raw line ending).
        if array.find(b"\n") != -1 or not read_all(array):
            return False
        self._skipped = None
        if done:
            self._accumulator.finished = True
        return True

    def _read_each(self, buffer: bytes, end: int, separator: bytes) -> list[tuple[int, int]]:
        """Read every event of ``buffer[:end]``; returns the spans (separator included) of
        the events the application should not see."""
        # :meth:`_read`, inlined: this runs once per event.
        accumulator = self._accumulator
        wants = accumulator.wants
        step = len(separator)
        hidden: list[tuple[int, int]] = []
        position = 0
        name: str | None
        payload: bytes | None
        for raw in buffer[:end].split(separator):
            # With one kind of line ending, an event without "\n" is one line.
            if raw.startswith(b"data: ") and raw.find(b"\n") == -1:
                name, payload = None, raw[6:]
            else:
                name, payload = _event_fields(raw)
            if payload is None:
                shown = True
            elif len(payload) < 16 and _is_done(payload):
                accumulator.finished = True
                shown = True
            elif not wants(name, payload):
                self._skipped = (name, payload)
                shown = True
            else:
                shown = self._take(name, payload)
            if not shown:
                hidden.append((position, position + len(raw) + step))
            position += len(raw) + step
        return hidden

    def _read_marked(self, buffer: bytes, end: int, separator: bytes) -> list[tuple[int, int]]:
        """:meth:`_read_each`, reading only the events the accumulator's signal marks once
        it has one."""
        accumulator = self._accumulator
        step = len(separator)
        hidden: list[tuple[int, int]] = []
        position = 0
        # Event by event while the accumulator wants to see each.
        while (signal := accumulator.signal) is None:
            stop = buffer.find(separator, position, end)
            stop = end if stop == -1 else stop
            if not self._read(*_fields_of_one_ending(buffer[position:stop])):
                hidden.append((position, stop + step))
            if stop == end:
                return hidden
            position = stop + step
        # Then only the events with the signal, or with [DONE], can change anything: the
        # event holding a mark starts after the last separator before it.
        rfind = buffer.rfind
        marked = set()
        for mark in signal.positions(buffer, position, end):
            before = rfind(separator, position, mark)
            marked.add(position if before == -1 else before + step)
        # Of the events holding "[DONE]", only the last can be the end of the response (a
        # text that holds it is an event like the others, marked or not).
        done = set()
        at = rfind(b"[DONE]", position, end)
        if at != -1:
            before = rfind(separator, position, at)
            done.add(position if before == -1 else before + step)
        for start in sorted(marked | done):
            stop = buffer.find(separator, start, end)
            stop = end if stop == -1 else stop
            raw = buffer[start:stop]
            if raw.startswith(b"data: ") and raw.find(b"\n") == -1:
                # One data line: a marked event has its mark there, so it is wanted.
                read = self._take if start in marked else self._read
                shown = read(None, raw[6:])
            else:
                shown = self._read(*_event_fields(raw))
            if not shown:
                hidden.append((start, stop + step))
        # Of the others, only the last event with data matters: it is the latest skipped.
        stop = end
        while True:
            before = rfind(separator, position, stop)
            start = position if before == -1 else before + step
            name, payload = _fields_of_one_ending(buffer[start:stop])
            if payload is not None and not _is_done(payload):
                if start not in marked and start not in done:
                    self._skipped = (name, payload)
                return hidden
            if start == position:
                return hidden
            stop = start - step

    def _feed_mixed(self, buffer: bytes) -> bytes:
        """Events of a stream that mixes line endings (or has not shown one yet)."""
        forwarded: list[bytes] = []
        start = 0
        while match := _BLANK_LINE.search(buffer, start):
            if match.end() == len(buffer) and buffer.endswith(b"\r"):
                break  # maybe the first half of a CRLF: wait for the next chunk
            if self._read(*_event_fields(buffer[start : match.start()])):
                forwarded.append(buffer[start : match.end()])
            start = match.end()
        self._buffer = buffer[start:]
        forwarded.append(self._release_oversized())
        return b"".join(forwarded)

    def _release_oversized(self) -> bytes:
        if len(self._buffer) <= MAX_EVENT_BYTES:
            return b""
        held, self._buffer = self._buffer, b""  # not SSE after all: stop holding it
        return held

    def close(self, *, complete: bool) -> bytes:
        rest, self._buffer = self._buffer, b""
        if rest and rest.strip() and complete and not self._read(*_event_fields(rest)):
            rest = b""
        self._finish(complete)
        return rest

    def _read(self, name: str | None, payload: bytes | None) -> bool:
        """Read one event (its name and data); whether the application should see it."""
        if payload is None:
            return True
        if len(payload) < 16 and _is_done(payload):
            self._accumulator.finished = True
            return True
        if not self._accumulator.wants(name, payload):
            self._skipped = (name, payload)
            return True
        return self._take(name, payload)

    def _take(self, name: str | None, payload: bytes) -> bool:
        """Read an event the accumulator wants."""
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


AWS_EVENT_STREAM: Final = "application/vnd.amazon.eventstream"
_AWS_PRELUDE: Final = struct.Struct(">III")  # total length, headers length, prelude CRC-32
_AWS_FIXED_SIZES: Final = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Header value sizes by type (booleans, integers, timestamp, UUID); 6 and 7 (bytes,
string) carry a 2-byte length."""


def _aws_headers(raw: bytes) -> dict[str, str]:
    """The string headers of an AWS event stream message (the others are skipped)."""
    headers: dict[str, str] = {}
    position = 0
    while position < len(raw):
        name_end = position + 1 + raw[position]
        name = raw[position + 1 : name_end].decode(errors="replace")
        kind = raw[name_end] if name_end < len(raw) else -1
        position = name_end + 1
        if kind in (6, 7):
            length = int.from_bytes(raw[position : position + 2], "big")
            if kind == 7:
                headers[name] = raw[position + 2 : position + 2 + length].decode(errors="replace")
            position += 2 + length
        elif kind in _AWS_FIXED_SIZES:
            position += _AWS_FIXED_SIZES[kind]
        else:
            raise ValueError(f"unknown header value type {kind}")
    return headers


class AwsEventStreamReader(_StreamReader):
    """An AWS event stream, as Bedrock's ``invoke-with-response-stream`` answers: binary
    messages (a prelude, headers, a payload, CRC-32 checksums), each ``chunk`` event carrying
    one provider event as base64 JSON in the ``bytes`` of its JSON payload. A message that
    fails its checksum ends the reading: the event then has no usage rather than a wrong one."""

    def __init__(self, exchange: Exchange, status_code: int, accumulator: StreamAccumulator):
        super().__init__(exchange, status_code, accumulator)
        self._buffer = bytearray()
        self._broken = False

    def feed(self, chunk: bytes) -> bytes:
        if self._broken:
            return chunk
        buffer = self._buffer
        buffer += chunk
        try:
            while len(buffer) >= _AWS_PRELUDE.size:
                total, headers_length, prelude_crc = _AWS_PRELUDE.unpack_from(buffer)
                if (
                    zlib.crc32(buffer[:8]) != prelude_crc
                    or not 16 + headers_length <= total <= MAX_EVENT_BYTES
                ):
                    raise ValueError("not an AWS event stream message")
                if len(buffer) < total:
                    break
                message = bytes(buffer[:total])
                del buffer[:total]
                if zlib.crc32(message[:-4]) != int.from_bytes(message[-4:], "big"):
                    raise ValueError("an AWS event stream message fails its checksum")
                headers = _aws_headers(message[12 : 12 + headers_length])
                self._message(headers, message[12 + headers_length : -4])
        except (ValueError, IndexError) as error:
            _log.warning("P402 stopped reading an AWS event stream: %s", error)
            self._broken = True
            buffer.clear()
        return chunk

    def _message(self, headers: dict[str, str], payload: bytes) -> None:
        if headers.get(":message-type") != "event" or headers.get(":event-type") != "chunk":
            return
        wrapper = load_json(payload)
        encoded = wrapper.get("bytes") if isinstance(wrapper, dict) else None
        if not isinstance(encoded, str):
            return
        event = load_json(base64.b64decode(encoded, validate=True))
        if isinstance(event, dict):
            self._accumulator.on_event(None, event)

    def close(self, *, complete: bool) -> bytes:
        self._finish(complete and not self._broken)
        return b""


def _is_sse(status: int, content_type: str) -> bool:
    return status < 400 and content_type.startswith("text/event-stream")


def body_reader_for(exchange: Exchange, status: int, content_type: str) -> BodyReader:
    if status >= 400:
        return JsonBodyReader(exchange, status)
    accumulator = exchange.format.stream_accumulator(
        exchange.endpoint, collect_text=exchange.meter.captures_content
    )
    if _is_sse(status, content_type):
        return SseReader(exchange, status, accumulator, exchange.hide_event)
    if exchange.endpoint.streams and content_type.startswith("application/json"):
        return JsonArrayReader(exchange, status, accumulator)
    if exchange.endpoint.streams and content_type.startswith(AWS_EVENT_STREAM):
        return AwsEventStreamReader(exchange, status, accumulator)
    return JsonBodyReader(exchange, status)


class _Tap:
    """Feeds a decoded copy of each chunk to a reader.

    Inline (``rewrite``), the reader runs on the application's path and its output replaces
    the chunk. Otherwise the chunks are only collected there and handed to the recorder
    thread every :data:`HANDOFF_BYTES`, which makes the reader, decodes and reads them in
    order: the application pays for a list append per chunk, and memory stays bounded by
    the hand-off size.
    """

    __slots__ = (
        "_content_type",
        "_decoder",
        "_ended",
        "_exchange",
        "_reader_made",
        "_recorder",
        "_status",
        "done",
        "pending",
        "rewrite",
    )

    def __init__(
        self, exchange: Exchange, status: int, content_type: str, decoder: Any, rewrite: bool
    ) -> None:
        self._exchange = exchange
        self._status = status
        self._content_type = content_type
        self._decoder = decoder
        self._recorder: Recorder = exchange.meter.recorder
        self.done = False  # reading stopped (on the thread that reads)
        self._ended = False  # the application's stream ended (on its thread)
        self.pending: list[bytes] = []
        self._reader_made: BodyReader | None = None
        self.rewrite = rewrite
        if rewrite:
            self._reader_made = body_reader_for(exchange, status, content_type)

    @property
    def _reader(self) -> BodyReader:
        if self._reader_made is None:
            self._reader_made = body_reader_for(self._exchange, self._status, self._content_type)
        return self._reader_made

    def hand_off(self) -> None:
        """Not inline: hand the chunks collected so far to the recorder thread. The
        wrappers' loops collect each chunk themselves (in ``pending``, unless ``done``) and
        call this once they hold :data:`HANDOFF_BYTES`."""
        pieces = self.pending[:]  # the list itself stays the one the loop appends to
        self.pending.clear()
        self._recorder.submit(partial(self._read, pieces))

    def feed(self, raw: bytes) -> bytes:
        """Inline: read ``raw`` now; returns what the application should see of it."""
        if self.done:
            return raw
        try:
            return b"".join(self._read_now(raw))
        except Exception:
            # Metering must never break the application's stream: stop reading it.
            _log.exception("P402 could not read a response stream; its usage is missing")
            self.done = True
            self._reader.close(complete=False)
            return raw

    def _read_now(self, raw: bytes) -> list[bytes]:
        # httpx decoders return bytes; httpx2 decoders yield them.
        decoded = self._decoder.decode(raw)
        pieces = [decoded] if isinstance(decoded, bytes) else decoded
        return [self._reader.feed(piece) for piece in pieces if piece]

    def _read(self, raws: list[bytes]) -> None:
        """On the recorder thread: decode collected chunks and read them in one piece."""
        if self.done:
            return
        try:
            if self._decoder is _IDENTITY:
                data = b"".join(raws)
            else:
                decoded = [self._decoder.decode(raw) for raw in raws]
                data = b"".join(
                    piece if isinstance(piece, bytes) else b"".join(piece) for piece in decoded
                )
            if data:  # (a reader is never false: the property only when none is made yet)
                (self._reader_made or self._reader).feed(data)
        except Exception:
            _log.exception("P402 could not read a response stream; its usage is missing")
            self.done = True
            self._reader.close(complete=False)

    def _close(self, complete: bool) -> bytes:
        forwarded: list[bytes] = []
        try:
            if complete and self._decoder is not _IDENTITY:  # which holds nothing back
                flushed = self._decoder.flush()
                pieces = [flushed] if isinstance(flushed, bytes) else list(flushed)
                forwarded = [self._reader.feed(piece) for piece in pieces if piece]
        except Exception:
            _log.exception("P402 could not finish reading a response stream")
            complete = False
        forwarded.append((self._reader_made or self._reader).close(complete=complete))
        return b"".join(forwarded)

    def _finish_later(self, pieces: list[bytes], complete: bool) -> None:
        self._read(pieces)
        if not self.done:
            self.done = True
            self._close(complete)

    def end(self, *, complete: bool) -> bytes:
        if self._ended or self.done:
            return b""
        self._ended = True
        if not self.rewrite:
            self._exchange.ended_ns = time.time_ns()
            pieces = self.pending[:]
            self.pending.clear()
            self._recorder.submit(partial(self._finish_later, pieces, complete))
            return b""
        self.done = True
        return self._close(complete)


class _TappedSync:
    """Wraps a ``SyncByteStream``; mixed into each client library's own stream base."""

    def __init__(self, inner: Any, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    def __iter__(self) -> Iterator[bytes]:
        tap = self._tap
        complete = False
        try:
            if tap.rewrite:
                for chunk in self._inner:
                    forwarded = tap.feed(chunk)
                    if forwarded:
                        yield forwarded
            else:
                pending = tap.pending
                size = 0  # of the chunks in pending
                for chunk in self._inner:
                    if chunk:
                        if not tap.done:  # collected as is, for the recorder thread
                            pending.append(chunk)
                            size += len(chunk)
                            if size >= HANDOFF_BYTES:
                                tap.hand_off()
                                size = 0
                        yield chunk
            complete = True
        finally:
            rest = tap.end(complete=complete)
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
        tap = self._tap
        complete = False
        try:
            if tap.rewrite:
                async for chunk in self._inner:
                    forwarded = tap.feed(chunk)
                    if forwarded:
                        yield forwarded
            else:
                pending = tap.pending
                size = 0  # of the chunks in pending
                async for chunk in self._inner:
                    if chunk:
                        if not tap.done:  # collected as is, for the recorder thread
                            pending.append(chunk)
                            size += len(chunk)
                            if size >= HANDOFF_BYTES:
                                tap.hand_off()
                                size = 0
                        yield chunk
            complete = True
        finally:
            rest = tap.end(complete=complete)
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
def _wrapper_class(response_type: type, is_async: bool) -> type:
    # iter_raw()/close() check isinstance(stream, SyncByteStream) of their own module.
    module = sys.modules[response_type.__module__.split(".")[0]]
    base = module.AsyncByteStream if is_async else module.SyncByteStream
    mixin = _TappedAsync if is_async else _TappedSync
    return type(mixin.__name__.lstrip("_") + "Stream", (mixin, base), {})


def tap_response(exchange: Exchange, response: Any, *, is_async: bool) -> None:
    """Wrap ``response.stream`` so the exchange finishes as the application reads it."""
    headers = response.headers
    status = response.status_code
    names = header_names(headers)
    content_type = (header_value(headers, names, b"content-type") or "").lower()
    content_encoding = header_value(headers, names, b"content-encoding")
    # A private decoder of the response's own content-encoding, independent of the one
    # the application's reads use.
    if content_encoding is None or content_encoding == "identity":
        decoder = _IDENTITY
    else:
        decoder = type(response)(200, headers=headers)._get_content_decoder()
    rewrite = exchange.hide_event is not None and _is_sse(status, content_type)
    if rewrite and content_encoding is not None:
        del headers["content-encoding"]
    tap = _Tap(exchange, status, content_type, decoder, rewrite)  # a class: by position
    response_type: type = type(response)
    response.stream = _wrapper_class(response_type, is_async)(response.stream, tap)
