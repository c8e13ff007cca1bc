"""The control-traffic HTTP/1.1 connection: framing of answers, keep-alive, and failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from p402.instrumentation._http import Connection, Disconnected, MalformedResponse

REQUEST = b"POST /v1/authorize HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{}"


class ScriptedServer:
    """Answers each request it reads with the next scripted bytes; ``None`` closes the
    connection (at once, after an answer it follows). Counts the connections it accepted."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests.append(data)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if self.answers and self.answers[0] is None:
                        self.answers.pop(0)
                        break

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[type[ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answers: list[bytes | None]) -> ScriptedServer:
        server = ScriptedServer(answers)
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def _connection(server: ScriptedServer) -> Connection:
    return Connection("127.0.0.1", server.port, https=False, timeout=5)


def test_content_length_answers_are_read_exactly_and_the_connection_is_kept(serve) -> None:
    server = serve(
        [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
            b'\r\n{"ok":true}',
            b"HTTP/1.1 402 Payment Required\r\ncontent-length: 2\r\n\r\nno",
        ]
    )
    connection = _connection(server)
    assert connection.exchange(REQUEST) == (200, b'{"ok":true}')
    assert connection.is_open
    assert connection.exchange(REQUEST) == (402, b"no")
    assert server.connections == 1
    assert server.requests == [REQUEST, REQUEST]  # each request in one write
    connection.close()


def test_chunked_answers_are_joined(serve) -> None:
    server = serve(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n'
        ]
    )
    connection = _connection(server)
    assert connection.exchange(REQUEST) == (200, b'{"a":1}')
    assert connection.is_open
    connection.close()


def test_connection_close_and_http_1_0_answers_close_the_connection(serve) -> None:
    server = serve(
        [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
        ]
    )
    connection = _connection(server)
    assert connection.exchange(REQUEST) == (200, b"a")
    assert not connection.is_open
    assert connection.exchange(REQUEST) == (200, b"b")
    assert not connection.is_open
    assert server.connections == 2


def test_an_answer_without_length_ends_with_the_connection(serve) -> None:
    server = serve([b"HTTP/1.1 200 OK\r\n\r\neverything until close", None])
    connection = _connection(server)
    status, body = connection.exchange(REQUEST)
    assert (status, body) == (200, b"everything until close")
    assert not connection.is_open


def test_interim_responses_are_skipped_and_304_has_no_body(serve) -> None:
    server = serve(
        [
            b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n',
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        ]
    )
    connection = _connection(server)
    assert connection.exchange(REQUEST) == (304, b"")
    assert connection.exchange(REQUEST) == (200, b"{}")  # nothing of the 304 left behind
    connection.close()


def test_a_server_that_closes_without_answering_is_disconnected(serve) -> None:
    server = serve([None])
    connection = _connection(server)
    with pytest.raises(Disconnected):
        connection.exchange(REQUEST)
    assert not connection.is_open


def test_a_truncated_body_is_disconnected(serve) -> None:
    server = serve([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", None])
    connection = _connection(server)
    with pytest.raises(Disconnected, match="5 of 10"):
        connection.exchange(REQUEST)


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_malformed(serve, answer: bytes) -> None:
    server = serve([answer, None])
    connection = _connection(server)
    with pytest.raises(MalformedResponse):
        connection.exchange(REQUEST)
    assert not connection.is_open


def test_nothing_listening_is_an_os_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    connection = Connection("127.0.0.1", port, https=False, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        connection.exchange(REQUEST)
