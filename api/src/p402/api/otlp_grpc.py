"""OTLP/gRPC trace export (``TraceService/Export``) on a port of its own, beside the HTTP API.

The same receiver as ``POST /v1/traces`` (:func:`p402.receiver.ingest.ingest_traces`): the
request's protobuf bytes are handed over undecoded, and the key comes from the call's
metadata, as ``authorization: Bearer <key>`` or ``x-p402-api-key`` (so
``OTEL_EXPORTER_OTLP_HEADERS`` works here too). Errors answer with the status codes the OTLP
exporters know: no or an invalid key ``UNAUTHENTICATED``, a key without the ``ingest`` role
``PERMISSION_DENIED``, a malformed request ``INVALID_ARGUMENT``, a request over
:data:`~p402.receiver.ingest.MAX_BODY_BYTES` ``RESOURCE_EXHAUSTED`` (none of them retried by
an exporter), the ledger database unreachable ``UNAVAILABLE`` (retried); an acknowledged
export is durably stored.

The port is bound exclusively (gRPC would otherwise share it, with ``SO_REUSEPORT``, with a
collector already listening there).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Final

import grpc
from sqlalchemy import Engine

from p402.api.auth import caller, presented_key
from p402.api.errors import error_answer
from p402.ledger.keys import Role
from p402.receiver.ingest import MAX_BODY_BYTES, PROTOBUF, ingest_traces

__all__ = ["EXPORT_METHOD", "OtlpGrpcServer"]

EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
WORKERS: Final = 8
"""Exports handled at the same time (each on a thread of its own)."""

_log = logging.getLogger(__name__)
_STATUS_OF_HTTP: Final = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _export(engine: Engine, request: bytes, context: grpc.ServicerContext) -> bytes:
    metadata = context.invocation_metadata()
    try:
        # Text metadata only: values of "-bin" names are bytes.
        key = presented_key({k.lower(): v for k, v in metadata if isinstance(v, str)})
        identity = caller(engine, key, Role.INGEST)
        result = ingest_traces(
            engine,
            identity.tenant_id,
            request,
            content_type=PROTOBUF,
            signing_key=identity.key_hash.encode(),
        )
    except Exception as error:  # answered as over HTTP, in gRPC's terms
        status, body, _ = error_answer(error, _log)
        code = _STATUS_OF_HTTP.get(status, grpc.StatusCode.INVALID_ARGUMENT)
        context.abort(code, body["error"]["message"])
    context.set_trailing_metadata(tuple(result.counts().items()))
    return result.otlp_response()


class OtlpGrpcServer:
    """Serves ``TraceService/Export`` for the ledger ``engine`` on ``host:port`` (``port=0``
    picks a free one) from :meth:`start` until :meth:`stop`."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 4317) -> None:
        self.host = host
        self.port = port
        self._server = grpc.server(
            ThreadPoolExecutor(WORKERS, thread_name_prefix="p402-otlp-grpc"),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_BODY_BYTES),
            ],
        )
        # No (de)serializers: the protobuf bytes go to the receiver as they came.
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            lambda request, context: _export(engine, request, context)
        )
        service, method = EXPORT_METHOD.rsplit("/", 1)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.lstrip("/"), {method: handler}),)
        )

    @property
    def _host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """Where exporters send to (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://{self._host_port}"

    def start(self) -> OtlpGrpcServer:
        """Bind and serve; raises :class:`OSError` when the port cannot be bound."""
        try:
            bound = self._server.add_insecure_port(self._host_port)
        except RuntimeError as error:  # grpcio raises, or answers 0, by version
            raise OSError(f"cannot listen on {self._host_port}: {error}") from None
        if not bound:
            raise OSError(f"cannot listen on {self._host_port}")
        self.port = bound
        self._server.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls; those in flight get ``grace`` seconds to finish."""
        self._server.stop(grace).wait()

    def __enter__(self) -> OtlpGrpcServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
