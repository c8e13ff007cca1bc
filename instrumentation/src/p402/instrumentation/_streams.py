"""Reading a streamed response body as the application consumes it.

The application's byte stream is wrapped, never buffered ahead: each chunk passes through
unchanged and a copy is decoded (content-encoding) and fed to a :class:`BodyReader`. The
event is finished when the stream is exhausted, closed early, or fails.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from functools import cache
from typing import Any, Final, Protocol

from p402.instrumentation._metering import Exchange
from p402.instrumentation.vocabulary import UsageEvidence

__all__ = ["BodyReader", "body_reader_for", "tap_response"]

MAX_BUFFERED_JSON_BYTES: Final = 16 * 1024 * 1024

_log = logging.getLogger(__name__)


class BodyReader(Protocol):
    def feed(self, chunk: bytes) -> None: ...
    def close(self, *, complete: bool) -> None: ...


class JsonBodyReader:
    """A non-SSE body read in chunks (``send(stream=True)``): parsed once complete."""

    __slots__ = ("_chunks", "_exchange", "_size", "_status")

    def __init__(self, exchange: Exchange, status_code: int) -> None:
        self._exchange = exchange
        self._status = status_code
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= MAX_BUFFERED_JSON_BYTES:
            self._chunks.append(chunk)

    def close(self, *, complete: bool) -> None:
        if complete and self._size <= MAX_BUFFERED_JSON_BYTES:
            self._exchange.finish_with_body(self._status, b"".join(self._chunks))
        else:
            self._exchange.finish(self._status, None, UsageEvidence.MISSING)


def body_reader_for(exchange: Exchange, status_code: int, content_type: str) -> BodyReader:
    return JsonBodyReader(exchange, status_code)


class _Tap:
    """Shared bookkeeping of the sync and async wrappers."""

    __slots__ = ("_decoder", "_done", "_reader")

    def __init__(self, reader: BodyReader, decoder: Any) -> None:
        self._reader = reader
        self._decoder = decoder
        self._done = False

    def feed(self, raw: bytes) -> None:
        if self._done:
            return
        try:
            # httpx decoders return bytes; httpx2 decoders yield them.
            self._forward(self._decoder.decode(raw))
        except Exception:
            # Metering must never break the application's stream: stop reading it.
            _log.exception("P402 could not read a response stream; its usage is missing")
            self._done = True
            self._reader.close(complete=False)

    def _forward(self, decoded: bytes | Iterable[bytes]) -> None:
        for piece in (decoded,) if isinstance(decoded, bytes) else decoded:
            if piece:
                self._reader.feed(piece)

    def end(self, *, complete: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            if complete:
                self._forward(self._decoder.flush())
        except Exception:
            _log.exception("P402 could not finish reading a response stream")
            complete = False
        self._reader.close(complete=complete)


class _TappedSync:
    """Wraps a ``SyncByteStream``; mixed into each client library's own stream base."""

    def __init__(self, inner: Any, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    def __iter__(self) -> Iterator[bytes]:
        complete = False
        try:
            for chunk in self._inner:
                self._tap.feed(chunk)
                yield chunk
            complete = True
        finally:
            self._tap.end(complete=complete)

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
                self._tap.feed(chunk)
                yield chunk
            complete = True
        finally:
            self._tap.end(complete=complete)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._tap.end(complete=False)


@cache
def _wrapper_class(base: type, is_async: bool) -> type:
    # iter_raw()/close() check isinstance(stream, SyncByteStream) of their own module.
    mixin = _TappedAsync if is_async else _TappedSync
    return type(mixin.__name__.lstrip("_") + "Stream", (mixin, base), {})


def tap_response(exchange: Exchange, response: Any, *, is_async: bool) -> None:
    """Wrap ``response.stream`` so the exchange finishes as the application reads it."""
    reader = body_reader_for(
        exchange, response.status_code, response.headers.get("content-type", "")
    )
    # A private decoder of the response's own content-encoding, independent of the one
    # the application's reads use.
    decoder = type(response)(200, headers=response.headers)._get_content_decoder()
    module = sys.modules[type(response).__module__.split(".")[0]]
    base = module.AsyncByteStream if is_async else module.SyncByteStream
    response.stream = _wrapper_class(base, is_async)(response.stream, _Tap(reader, decoder))
