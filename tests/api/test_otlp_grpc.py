"""OTLP/gRPC ingest: the real OTLP gRPC exporter of the OpenTelemetry SDK into the receiver,
with the HTTP route's keys, tenancy, idempotency and bad-input answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc import Compression
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult
from tests.api.conftest import GENAI_EVENT as EVENT
from tests.api.conftest import finished_spans, otlp_payload

from p402.api.otlp_grpc import EXPORT_METHOD, OtlpGrpcServer
from p402.receiver.ingest import MAX_BODY_BYTES


@pytest.fixture
def receiver(engine) -> Iterator[OtlpGrpcServer]:
    with OtlpGrpcServer(engine, port=0) as server:
        yield server


def _export(
    server: OtlpGrpcServer,
    key: str | None,
    *attribute_sets: dict,
    compression: Compression | None = None,
) -> SpanExportResult:
    """Spans made by the SDK, sent in one export by its real OTLP/gRPC exporter."""
    headers = {"authorization": f"Bearer {key}"} if key else None
    exporter = OTLPSpanExporter(
        endpoint=server.address, insecure=True, headers=headers, compression=compression
    )
    try:
        return exporter.export(finished_spans(*attribute_sets))
    finally:
        exporter.shutdown()


def _call(
    server: OtlpGrpcServer,
    body: bytes,
    metadata: tuple = (),
    compression: grpc.Compression = grpc.Compression.NoCompression,
) -> bytes:
    """One raw ``Export`` call: the request's bytes as given."""
    address = server.address.removeprefix("http://")
    with grpc.insecure_channel(address, compression=compression) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        return bytes(export(body, metadata=metadata, timeout=10))


def test_the_sdks_grpc_exporter_delivers_events_once_however_often_sent(
    receiver, client, keys
) -> None:
    for compression in (None, Compression.Gzip, None):
        result = _export(receiver, keys["ingest"], EVENT, compression=compression)
        assert result is SpanExportResult.SUCCESS
    read = {"x-p402-api-key": keys["read"]}
    (event,) = client.get("/v1/events", headers=read).json()["data"]
    assert event["id"] == EVENT["p402.event.id"]
    assert event["department"] == "legal"
    assert event["model_used"] == "gpt-5-mini-2025-08-07"
    assert event["cost_usd"] is not None
    other = client.get("/v1/events", headers={"x-p402-api-key": keys["globex_read"]}).json()
    assert other["data"] == []


def test_the_trailing_metadata_counts_the_spans_as_the_http_headers_do(receiver, keys) -> None:
    body = otlp_payload(EVENT, {"http.request.method": "GET"})
    address = receiver.address.removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        metadata = (("x-p402-api-key", keys["ingest"]),)
        _, call = export.with_call(body, metadata=metadata, timeout=10)
    counts = {name: value for name, value in call.trailing_metadata() if name.startswith("x-p402")}
    assert counts == {
        "x-p402-spans-accepted": "1",
        "x-p402-events-inserted": "1",
        "x-p402-spans-ignored": "1",
        "x-p402-spans-rejected": "0",
    }


def test_the_answer_is_an_otlp_response_with_rejected_spans_as_partial_success(
    receiver, keys, payload
) -> None:
    bad = {**EVENT, "p402.event.id": "bad", "gen_ai.usage.input_tokens": -1}
    answer = ExportTraceServiceResponse.FromString(
        _call(receiver, payload(EVENT, bad), (("x-p402-api-key", keys["ingest"]),))
    )
    assert answer.partial_success.rejected_spans == 1
    assert "gen_ai.usage.input_tokens" in answer.partial_success.error_message


@pytest.mark.parametrize(
    ("metadata", "status"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer p402_not-a-key"),), grpc.StatusCode.UNAUTHENTICATED),
        ("read", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_keys_are_checked_as_over_http(receiver, client, keys, payload, metadata, status) -> None:
    if metadata == "read":
        metadata = (("authorization", f"Bearer {keys['read']}"),)
    with pytest.raises(grpc.RpcError) as refused:
        _call(receiver, payload(EVENT), metadata)
    assert refused.value.code() is status
    total = client.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()["total"]
    assert total["events"] == 0


def test_bad_input_gets_its_status_and_the_receiver_still_answers(
    receiver, client, keys, payload
) -> None:
    metadata = (("x-p402-api-key", keys["ingest"]),)
    gzip = grpc.Compression.Gzip
    for body, compression, status in (
        (b"\x0a\xff\xff\xff\xff\x0f", None, grpc.StatusCode.INVALID_ARGUMENT),  # truncated
        (b"\x0a" * (MAX_BODY_BYTES + 1), None, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (b"\x0a\x00" * MAX_BODY_BYTES, gzip, grpc.StatusCode.RESOURCE_EXHAUSTED),  # a bomb
    ):
        with pytest.raises(grpc.RpcError) as refused:
            _call(receiver, body, metadata, compression or grpc.Compression.NoCompression)
        assert refused.value.code() is status
    assert _export(receiver, keys["ingest"], EVENT) is SpanExportResult.SUCCESS
    total = client.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()["total"]
    assert total["events"] == 1


def test_a_port_taken_by_another_listener_is_refused_not_shared(engine) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = OtlpGrpcServer(engine, port=taken.getsockname()[1])
        with pytest.raises(OSError, match="cannot listen"):
            server.start()
        server.stop(0)


def test_p402_serve_receives_otlp_grpc_on_its_second_port(tmp_path) -> None:
    grpc_port, http_port = _free_port(), _free_port()
    environment = {**os.environ, "P402_DATABASE_URL": f"sqlite:///{tmp_path}/p402.db"}
    command = [str(Path(sys.executable).parent / "p402"), "serve", "--port", str(http_port)]
    with subprocess.Popen(
        [*command, "--grpc-port", str(grpc_port)],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    ) as serve:
        try:
            assert serve.stderr is not None
            lines = [serve.stderr.readline(), serve.stderr.readline()]
            assert f"OTLP/gRPC receiver on http://127.0.0.1:{grpc_port}" in "".join(lines)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                export = channel.unary_unary(EXPORT_METHOD)
                with pytest.raises(grpc.RpcError) as refused:
                    export(b"", timeout=30, wait_for_ready=True)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        finally:
            serve.terminate()
            serve.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
