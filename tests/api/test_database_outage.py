"""The ledger database goes away and comes back: ingest answers 503 with ``Retry-After`` (gRPC
``UNAVAILABLE``), which OTLP exporters retry, so an outage of the database loses no event."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import httpx
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from sqlalchemy import make_url
from tests.api.conftest import GENAI_EVENT as EVENT
from tests.api.conftest import finished_spans

from p402.api import create_app
from p402.api.errors import RETRY_AFTER_SECONDS
from p402.api.otlp_grpc import EXPORT_METHOD, OtlpGrpcServer
from p402.api.server import BackgroundServer
from p402.ledger.keys import Role, create_key

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


class Outage:
    """The ledger's PostgreSQL database refusing every connection (its open ones ended), as
    while the server restarts, until :meth:`end`."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.name = url.database
        self.admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)

    def _run(self, *statements: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)

    def begin(self) -> None:
        self._run(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
        )

    def end(self) -> None:
        self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def outage(database_url: str) -> Iterator[Outage]:
    outage = Outage(database_url)
    try:
        yield outage
    finally:
        outage.end()


def test_an_otlp_exporter_retries_through_a_database_outage_and_loses_nothing(engine, outage):
    """Also: every route, strict enforcement's included, answers 503 meanwhile."""
    _, ingest = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read = create_key(engine, tenant="acme", role=Role.READ)
    with BackgroundServer(create_app(engine, scheduler=False)) as server:
        outage.begin()
        answer = httpx.post(
            f"{server.url}/v1/events",
            json=[{"id": "e-1", "provider": "openai", "model_used": "gpt-5-mini"}],
            headers={"x-p402-api-key": ingest},
        )
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert answer.json()["error"]["code"] == "unavailable"
        authorization = httpx.post(
            f"{server.url}/v1/authorize",
            json={"event_id": "e-2", "model": "gpt-5-mini", "max_cost_usd": "0.01"},
            headers={"x-p402-api-key": ingest},
        )  # strict enforcement's route, answered apart from the framework
        assert authorization.status_code == 503
        assert authorization.headers["retry-after"] == str(RETRY_AFTER_SECONDS)

        back = threading.Timer(1.0, outage.end)  # the database returns while the exporter waits
        back.start()
        exporter = OTLPSpanExporter(
            endpoint=f"{server.url}/v1/traces", headers={"x-p402-api-key": ingest}, timeout=20
        )
        try:
            assert exporter.export(finished_spans(EVENT)) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
            back.join()
        spend = httpx.get(f"{server.url}/v1/spend", headers={"x-p402-api-key": read}).json()
    assert spend["total"]["events"] == 1  # the exported span; the refused event was not stored


def test_otlp_grpc_answers_unavailable_while_the_database_is_away(engine, outage, payload):
    _, ingest = create_key(engine, tenant="acme", role=Role.INGEST)
    with OtlpGrpcServer(engine, port=0) as server:
        outage.begin()
        with grpc.insecure_channel(server.address.removeprefix("http://")) as channel:
            export = channel.unary_unary(EXPORT_METHOD)
            with pytest.raises(grpc.RpcError) as refused:
                export(payload(EVENT), metadata=(("x-p402-api-key", ingest),), timeout=30)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            outage.end()
            export(payload(EVENT), metadata=(("x-p402-api-key", ingest),), timeout=30)
