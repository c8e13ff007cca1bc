"""A local HTTP server that answers like OpenAI, Anthropic, Gemini and OpenRouter.

It picks the fixture from the request path and body (streaming or not), sends the headers
the manifest lists, records every request it receives, and can be told to fail the next
requests with a given status (e.g. 429 then success, to exercise retries).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from p402.instrumentation._streams import AWS_EVENT_STREAM
from p402.instrumentation.testing.fixtures import fixture_bytes, manifest

__all__ = ["RecordedRequest", "StandInProvider", "as_aws_event_stream"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _fixture_for(path: str, body: dict[str, Any]) -> str | None:
    streaming = body.get("stream") is True
    route = path.split("?", 1)[0]
    if route.endswith(":streamGenerateContent"):
        return "gemini_stream.sse"
    if route.endswith(":generateContent"):
        return "gemini_generate.json"
    if route.startswith("/api/v1/") and route.endswith("/chat/completions"):
        return "openrouter_chat.json"
    if route.endswith("/chat/completions"):
        return "openai_chat_stream.sse" if streaming else "openai_chat.json"
    if route.endswith("/responses"):
        return "openai_responses_stream.sse" if streaming else "openai_responses.json"
    if route.endswith("/embeddings"):
        return "openai_embeddings.json"
    if route.endswith("/messages"):
        return "anthropic_messages_stream.sse" if streaming else "anthropic_messages.json"
    if route.endswith("/invoke-with-response-stream"):  # Bedrock: an AWS event stream
        return "anthropic_messages_stream.sse"
    if route.endswith("/invoke"):
        return "anthropic_messages.json"
    return None


def _sse_events(payload: bytes) -> list[bytes]:
    return [event for event in payload.replace(b"\r\n", b"\n").split(b"\n\n") if event.strip()]


def _as_json_array(sse: bytes) -> bytes:
    """Gemini's stream without ``alt=sse``: the same chunks as one JSON array."""
    chunks = [event.removeprefix(b"data: ") for event in _sse_events(sse)]
    return b"[" + b",\r\n".join(chunks) + b"]"


def _aws_header(name: str, value: str) -> bytes:
    encoded_name, encoded_value = name.encode(), value.encode()
    return (
        bytes([len(encoded_name)])
        + encoded_name
        + bytes([7])  # a string
        + struct.pack(">H", len(encoded_value))
        + encoded_value
    )


def as_aws_event_stream(sse: bytes) -> bytes:
    """An Anthropic stream as Bedrock sends it: each event's JSON, base64-encoded in the
    ``bytes`` of a ``chunk`` message of the AWS event stream encoding (binary frames with
    headers and CRC-32 checksums)."""
    headers = b"".join(
        _aws_header(name, value)
        for name, value in (
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        )
    )
    frames = []
    for event in _sse_events(sse):
        data = b"".join(
            line.removeprefix(b"data:").strip()
            for line in event.split(b"\n")
            if line.startswith(b"data:")
        )
        payload = json.dumps({"bytes": base64.b64encode(data).decode()}).encode()
        prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
        prelude += struct.pack(">I", zlib.crc32(prelude))
        message = prelude + headers + payload
        frames.append(message + struct.pack(">I", zlib.crc32(message)))
    return b"".join(frames)


def _asks_for_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _without_usage_chunk(sse: bytes) -> bytes:
    """An OpenAI chat stream as sent without ``stream_options.include_usage``."""
    kept = [event for event in _sse_events(sse) if b'"choices":[]' not in event]
    return b"".join(event + b"\n\n" for event in kept)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner_record(
            RecordedRequest(
                "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
        )
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        failure = self.server.owner_next_failure()
        name = "openai_error_429.json" if failure else _fixture_for(self.path, parsed)
        if name is None:
            self._send(404, {"content-type": "application/json"}, b'{"error":"not found"}')
            return
        headers = dict(manifest().get(name, {}).get("response_headers") or {})
        headers.setdefault(
            "content-type", "text/event-stream" if name.endswith(".sse") else "application/json"
        )
        payload = fixture_bytes(name)
        if name == "gemini_stream.sse" and "alt=sse" not in self.path:
            headers["content-type"] = "application/json"
            payload = _as_json_array(payload)
        elif name == "openai_chat_stream.sse" and not _asks_for_usage(parsed):
            payload = _without_usage_chunk(payload)
        elif self.path.split("?", 1)[0].endswith("/invoke-with-response-stream") and not failure:
            headers["content-type"] = AWS_EVENT_STREAM
            payload = as_aws_event_stream(payload)
        self._send(failure or 200, headers, payload)

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        # Streams arrive in several pieces, as from a real server.
        streamed = headers.get("content-type", "").startswith(
            ("text/event-stream", AWS_EVENT_STREAM)
        )
        step = 97 if streamed else 0
        for start in range(0, len(payload), step or len(payload) or 1):
            self.wfile.write(payload[start : start + (step or len(payload))])
            self.wfile.flush()
            if step and self.server.stream_pause():
                time.sleep(self.server.stream_pause())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, provider: StandInProvider, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self._provider = provider

    def owner_record(self, request: RecordedRequest) -> None:
        with self._provider._lock:
            self._provider.requests.append(request)

    def stream_pause(self) -> float:
        return self._provider.stream_pause

    def owner_next_failure(self) -> int | None:
        with self._provider._lock:
            return self._provider._failures.popleft() if self._provider._failures else None


class StandInProvider:
    """See the module docstring. Use as a context manager, or call start() and stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._failures: deque[int] = deque()
        self.requests: list[RecordedRequest] = []
        self.stream_pause = 0.0
        """Seconds to wait between the pieces of a stream (to hold a stream open)."""
        self._server = _Server(self, host, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="p402-standin-provider", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and the 429 error body."""
        with self._lock:
            self._failures.extend([status] * times)

    def start(self) -> StandInProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandInProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
