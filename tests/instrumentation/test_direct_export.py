"""The exporter's own kept-alive HTTP/1.1 connection, against a real local HTTP/1.1 server.

Batches go over one connection as long as the endpoint keeps it open, a connection the
endpoint closed while idle is replaced before the next batch (the batch is delivered, not
spooled), and whatever the lean connection cannot send plainly (a proxy, credentials in the
URL, unusual headers) goes over ``urllib3`` as before.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from tests.instrumentation.conftest import exported_span_names

from p402.instrumentation._otlp import encode_span
from p402.instrumentation._pipeline import OtlpSink
from p402.instrumentation._spool import SpoolingSpanExporter


class KeepAliveEndpoint:
    """An HTTP/1.1 ``/v1/traces`` endpoint that keeps connections open; counts the
    connections it accepted and records each request's span names and headers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.connections: set[tuple[str, int]] = set()
        self.received: list[tuple[list[str], dict[str, str]]] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                names = exported_span_names(body)
                with endpoint.lock:
                    endpoint.connections.add(self.client_address)
                    endpoint.received.append((names, dict(self.headers.items())))
                answer = b"" if endpoint.status < 300 else b'{"error":"no such tenant"}'
                self.send_response(endpoint.status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def names(self) -> list[str]:
        with self.lock:
            return [name for names, _ in self.received for name in names]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def keep_alive() -> Iterator[KeepAliveEndpoint]:
    endpoint = KeepAliveEndpoint()
    yield endpoint
    endpoint.stop()


def _sink(exporter: SpoolingSpanExporter) -> OtlpSink:
    return OtlpSink(exporter, Resource.create({"service.name": "test"}))


def _emit(sink: OtlpSink, name: str) -> None:
    sink.emit(name, None, 1, 2, {"gen_ai.provider.name": "openai"}, {"p402.event.id": name}, False)  # type: ignore[arg-type]


def test_batches_share_one_kept_alive_connection(keep_alive, tmp_path):
    exporter = SpoolingSpanExporter(
        keep_alive.url, tmp_path, headers={"x-p402-api-key": "p402_k"}, max_bytes=1 << 20
    )
    assert exporter._direct is not None
    sink = _sink(exporter)
    for index in range(3):
        _emit(sink, f"event {index}")
        assert sink.flush(5_000)
    assert keep_alive.names() == ["event 0", "event 1", "event 2"]
    with keep_alive.lock:
        assert len(keep_alive.connections) == 1
        headers = keep_alive.received[0][1]
    assert headers["x-p402-api-key"] == "p402_k"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Host"] == f"127.0.0.1:{keep_alive.port}"
    assert not list(tmp_path.iterdir())  # nothing was spooled
    sink.shutdown()


def test_a_connection_the_endpoint_closed_is_replaced_before_the_next_batch(tmp_path):
    """The endpoint closes every connection after its answer (HTTP/1.0): each batch is
    still delivered at once, over a fresh connection, and nothing waits in the spool."""
    endpoint = KeepAliveEndpoint()
    try:
        handler = endpoint._server.RequestHandlerClass
        handler.protocol_version = "HTTP/1.0"  # type: ignore[attr-defined]
        exporter = SpoolingSpanExporter(endpoint.url, tmp_path, max_bytes=1 << 20)
        sink = _sink(exporter)
        for index in range(3):
            _emit(sink, f"event {index}")
            assert sink.flush(5_000)
            time.sleep(0.05)  # the close reaches this side before the next batch
        assert endpoint.names() == ["event 0", "event 1", "event 2"]
        assert not list(tmp_path.iterdir())
        sink.shutdown()
    finally:
        endpoint.stop()


def test_a_stale_kept_alive_connection_is_noticed_and_closed():
    """``Connection.is_stale``: open and idle, fine; once the server closed it, stale."""
    from p402.instrumentation._http import Connection

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    connection = Connection("127.0.0.1", port, https=False, timeout=5)
    assert not connection.is_stale()  # not open yet
    assert connection.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (200, b"ok")
    thread.join(5)
    assert connection.is_open and not connection.is_stale()
    accepted[0].close()
    deadline = time.monotonic() + 5
    while not connection.is_stale():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not connection.is_open
    listener.close()


def test_a_refused_batch_over_the_direct_connection_is_dropped_with_the_answer(tmp_path, caplog):
    endpoint = KeepAliveEndpoint(status=403)
    try:
        exporter = SpoolingSpanExporter(endpoint.url, tmp_path, max_bytes=1 << 20)
        sink = _sink(exporter)
        _emit(sink, "refused")
        with caplog.at_level("ERROR", logger="p402.instrumentation._spool"):
            sink.flush(5_000)
        assert "HTTP 403" in caplog.text and "no such tenant" in caplog.text
        assert not list(tmp_path.iterdir())
        sink.shutdown()
    finally:
        endpoint.stop()


def test_an_endpoint_that_is_down_spools_the_batch_and_it_arrives_later(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/traces"
    exporter = SpoolingSpanExporter(
        url, tmp_path, max_bytes=1 << 20, min_backoff=0.05, max_backoff=0.1
    )
    sink = _sink(exporter)
    _emit(sink, "waited")
    assert not sink.flush(1_000)
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".batch")]) == 1
    endpoint = _endpoint_on(port)
    try:
        deadline = time.monotonic() + 10
        # Delivered by the retry thread, and deleted from the spool once answered.
        while endpoint.names() != ["waited"] or [
            p for p in tmp_path.iterdir() if ".batch" in p.name
        ]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert endpoint.names() == ["waited"]  # once
        sink.shutdown()
    finally:
        endpoint.stop()


def _endpoint_on(port: int) -> KeepAliveEndpoint:
    """A :class:`KeepAliveEndpoint` listening on ``port``."""
    original = ThreadingHTTPServer.__init__

    def bind_to(server: Any, address: Any, handler: Any, *args: Any, **kwargs: Any) -> None:
        original(server, ("127.0.0.1", port), handler, *args, **kwargs)

    ThreadingHTTPServer.__init__ = bind_to  # type: ignore[method-assign, assignment]
    try:
        return KeepAliveEndpoint()
    finally:
        ThreadingHTTPServer.__init__ = original  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("http://user:secret@127.0.0.1:4318/v1/traces", {}),
        ("http://127.0.0.1:4318/v1/traces", {"x-p402-api-key": "bad\r\nvalue"}),
        ("http://127.0.0.1:4318/v1/traces", {"bad header": "value"}),
    ],
)
def test_what_the_direct_connection_cannot_send_plainly_goes_over_urllib3(
    url: str, headers: dict[str, str], tmp_path: Path
) -> None:
    exporter = SpoolingSpanExporter(url, tmp_path, headers=headers, max_bytes=1 << 20)
    assert exporter._direct is None
    exporter.shutdown(100)


def test_a_proxied_endpoint_goes_over_urllib3(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    proxied = SpoolingSpanExporter("http://p402.example.com/v1/traces", tmp_path, max_bytes=1 << 20)
    assert proxied._direct is None
    proxied.shutdown(100)
    monkeypatch.setenv("NO_PROXY", "p402.example.com")
    direct = SpoolingSpanExporter("http://p402.example.com/v1/traces", tmp_path, max_bytes=1 << 20)
    assert direct._direct is not None
    direct.shutdown(100)


def test_encoded_spans_are_unchanged_by_the_connection(keep_alive, tmp_path):
    """What arrives is exactly what was encoded (one span, the ids given)."""
    exporter = SpoolingSpanExporter(keep_alive.url, tmp_path, max_bytes=1 << 20)
    span = encode_span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        parent_span_id=None,
        name="chat gpt-5-mini",
        start_ns=1,
        end_ns=2,
        common={"gen_ai.provider.name": "openai"},
        attributes={"p402.event.id": "e-1"},
        error=False,
    )
    sink = _sink(exporter)
    body = sink._frame.encode([span])
    exporter.export_encoded(body, 1)
    assert keep_alive.names() == ["chat gpt-5-mini"]
    exporter.shutdown(1_000)
