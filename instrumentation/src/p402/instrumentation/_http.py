"""A kept-alive HTTP/1.1 connection for P402's own control traffic (``POST /v1/authorize``,
``GET /v1/policy``): one write per request, head and body together, and a lean reading of
the answer.

Strict enforcement makes one such round trip before every LLM call, so its client side is
on the application's path. ``http.client`` reads a response's head with the ``email``
package's parser, which costs more than the rest of the round trip's client side together;
this reads the status line and the few headers that frame the body (``Content-Length``,
``Transfer-Encoding: chunked``, ``Connection``) and nothing else. The request is written
whole by the caller (:meth:`Connection.exchange`).
"""

from __future__ import annotations

import io
import re
import select
import socket
import ssl
from typing import Final

__all__ = ["ILLEGAL_IN_HEADER", "Connection", "Disconnected", "MalformedResponse"]

ILLEGAL_IN_HEADER: Final = re.compile(r"[\r\n\x00]")
"""What a header value sent on a connection must not hold (it would end the header)."""

_MAX_LINE: Final = 65_536
_MAX_HEADERS: Final = 100


class Disconnected(ConnectionError):
    """The server closed the connection before answering (e.g. a kept-alive one it dropped)."""


class MalformedResponse(ConnectionError):
    """What came back is not an HTTP/1.x response."""


class Connection:
    """One connection to ``host:port``, opened on first use, reused while the server keeps
    it alive."""

    __slots__ = ("_context", "_host", "_https", "_port", "_reader", "_socket", "_timeout")

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        https: bool,
        timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port or (443 if https else 80)
        self._https = https
        self._timeout = timeout
        self._context = context
        """The TLS context of an ``https`` connection; ``None``: the system's defaults."""
        self._socket: socket.socket | None = None
        self._reader: io.BufferedReader | None = None

    @property
    def is_open(self) -> bool:
        return self._socket is not None

    def _open(self) -> socket.socket:
        raw = socket.create_connection((self._host, self._port), self._timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._https:
            context = self._context or ssl.create_default_context()
            raw = context.wrap_socket(raw, server_hostname=self._host)
        self._socket = raw
        return raw

    def exchange(self, message: bytes, *, head_only: bool = False) -> tuple[int, bytes]:
        """Send ``message`` (a whole request) and read the response: its status and body.
        ``head_only``: the request was a HEAD (no body follows the head). Raises
        :class:`OSError` (:class:`Disconnected`, :class:`MalformedResponse`, timeouts, ...);
        the connection is then closed."""
        try:
            sock = self._socket or self._open()
            sock.sendall(message)
            reader = self._reader
            if reader is None:
                reader = self._reader = sock.makefile("rb")
            status, body, keep_alive = _read_response(reader, head_only)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return status, body

    def is_stale(self) -> bool:
        """Whether an open connection, idle between requests, can no longer be used: the
        server closed it (or sent something unasked). Then it is closed here."""
        sock = self._socket
        if sock is None:
            return False
        try:
            readable = bool(select.select([sock], [], [], 0)[0]) or (
                self._https and bool(sock.pending())  # type: ignore[attr-defined]
            )
        except (OSError, ValueError):
            readable = True
        if readable:
            self.close()
        return readable

    def close(self) -> None:
        reader, sock = self._reader, self._socket
        self._reader = self._socket = None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()


def _line(reader: io.BufferedReader) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise MalformedResponse("a line of the response is too long")
    return line


def _read_response(reader: io.BufferedReader, head_only: bool) -> tuple[int, bytes, bool]:
    """Status, body, and whether the connection stays open after this response."""
    while True:
        status_line = _line(reader)
        if not status_line:
            raise Disconnected("the server closed the connection without answering")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise MalformedResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        length: int | None = None
        chunked = False
        keep_alive = version != b"HTTP/1.0"
        for _ in range(_MAX_HEADERS + 1):
            line = _line(reader)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise Disconnected("the server closed the connection in a response's head")
            name, colon, value = line.partition(b":")
            if not colon:
                raise MalformedResponse(f"not a header line: {line[:80]!r}")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise MalformedResponse(f"Content-Length {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        else:
            raise MalformedResponse(f"more than {_MAX_HEADERS} header lines")
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            continue
        if head_only or status in (204, 304):
            return status, b"", keep_alive
        if chunked:
            return status, _chunks(reader), keep_alive
        if length is not None:
            body = _exactly(reader, length)
            return status, body, keep_alive
        return status, reader.read(), False  # delimited by the end of the connection


def _exactly(reader: io.BufferedReader, length: int) -> bytes:
    body = reader.read(length)
    if len(body) != length:
        raise Disconnected(f"the body ended after {len(body)} of {length} bytes")
    return body


def _chunks(reader: io.BufferedReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise MalformedResponse(f"chunk size {size_line[:40]!r}") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        parts.append(_exactly(reader, size))
        if _line(reader) not in (b"\r\n", b"\n"):
            raise MalformedResponse("a chunk does not end with a line break")
