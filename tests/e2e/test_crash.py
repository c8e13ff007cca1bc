"""Acceptance: a receiver killed mid-stream (SIGKILL, no shutdown) loses no acknowledged batch,
leaves no half-written batch, and counts nothing twice when the unacknowledged batches are
sent again. Every component is real:

OTLP protobuf built with the OpenTelemetry SDK → several sender threads → ``p402 serve``
subprocess (killed, then started again on the same database) → ledger (SQLite and PostgreSQL),
read back with SQLAlchemy.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, column, func, select, table

from p402.ledger.keys import Role, create_key

BATCHES = 240
SPANS_PER_BATCH = 25
SENDERS = 4
KILL_AFTER = 80  # acknowledged batches before the SIGKILL
PROTOBUF = {"content-type": "application/x-protobuf"}
EVENTS = table(
    "economic_event",
    *map(column, ("tenant_id", "event_id", "input_tokens", "output_tokens", "cost_picos")),
)
P402 = Path(sys.executable).parent / "p402"


def _event_id(batch: int, span: int) -> str:
    return f"batch-{batch:04d}-span-{span:03d}"


BATCH_PREFIX = len("batch-0000")


def _batches() -> dict[int, bytes]:
    """Each batch: one OTLP export request of SPANS_PER_BATCH economic-event spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("crash-test")
    bodies = {}
    for batch in range(BATCHES):
        for span in range(SPANS_PER_BATCH):
            attributes = {
                "p402.event.id": _event_id(batch, span),
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-5-mini",
                "gen_ai.usage.input_tokens": 100 + span,
                "gen_ai.usage.output_tokens": 10 + batch,
                "p402.owner.department": "legal",
            }
            tracer.start_span("chat gpt-5-mini", attributes=attributes).end()
        bodies[batch] = bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())
        exporter.clear()
    provider.shutdown()
    return bodies


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Server:
    """``p402 serve`` in a subprocess, its output in a log file."""

    def __init__(self, database_url: str, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        environment = {**os.environ, "P402_DATABASE_URL": database_url}
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    str(P402),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--grpc-port",
                    "0",
                ],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"p402 serve did not come up:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> float:
        """SIGKILL, no shutdown at all; returns when it was sent."""
        sent = time.monotonic()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        return sent

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Stream:
    """Batches sent from several threads, and what became of each."""

    url: str
    key: str
    bodies: dict[int, bytes]
    acknowledged: set[int] = field(default_factory=set)
    transport_errors: dict[int, tuple[str, float]] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, batches: list[int], senders: int = SENDERS) -> list[threading.Thread]:
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for batch in batches:
            pending.put(batch)
        threads = [
            threading.Thread(target=self._sender, args=(pending,), daemon=True)
            for _ in range(senders)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _sender(self, pending: queue.SimpleQueue[int]) -> None:
        headers = {**PROTOBUF, "x-p402-api-key": self.key}
        with httpx.Client(base_url=self.url, headers=headers, timeout=20) as http:
            while True:
                try:
                    batch = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    response = http.post("/v1/traces", content=self.bodies[batch])
                except httpx.TransportError as error:
                    with self.lock:
                        self.transport_errors[batch] = (repr(error), time.monotonic())
                    continue
                with self.lock:
                    if response.status_code != 200:
                        self.refused[batch] = f"{response.status_code} {response.text[:300]}"
                        continue
                    answer = ExportTraceServiceResponse.FromString(response.content)
                    if answer.partial_success.rejected_spans:
                        self.refused[batch] = f"rejected: {answer.partial_success}"
                        continue
                    self.acknowledged.add(batch)

    def count_acknowledged(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def _ledger_batches(engine: Engine, tenant_id: int) -> dict[int, tuple[int, int]]:
    """Batch number → (events, distinct event ids) in the ledger, by event id prefix."""
    prefix = func.substr(EVENTS.c.event_id, 1, BATCH_PREFIX)
    statement = (
        select(prefix, func.count(), func.count(EVENTS.c.event_id.distinct()))
        .where(EVENTS.c.tenant_id == tenant_id)
        .group_by(prefix)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    found = {}
    for name, events, distinct in rows:
        assert name.startswith("batch-"), f"an event the test did not send: {name}"
        found[int(name.removeprefix("batch-"))] = (events, distinct)
    return found


def _assert_spend_matches_the_events(
    url: str, read_key: str, engine: Engine, tenant_id: int
) -> dict[str, int]:
    """``GET /v1/spend`` (answered from the rollups) agrees with the event rows; the totals."""
    with engine.connect() as connection:
        events, input_tokens, output_tokens, cost_picos = connection.execute(
            select(
                func.count(),
                func.coalesce(func.sum(EVENTS.c.input_tokens), 0),
                func.coalesce(func.sum(EVENTS.c.output_tokens), 0),
                func.coalesce(func.sum(EVENTS.c.cost_picos), 0),
            )
            .select_from(EVENTS)
            .where(EVENTS.c.tenant_id == tenant_id)
        ).one()
    response = httpx.get(f"{url}/v1/spend", headers={"x-p402-api-key": read_key}, timeout=20)
    assert response.status_code == 200, response.text
    total = response.json()["total"]
    totals = {"events": events, "input_tokens": input_tokens, "output_tokens": output_tokens}
    assert {name: total[name] for name in totals} == totals
    assert Decimal(total["cost_usd"]) == Decimal(cost_picos).scaleb(-12)
    return totals


@pytest.mark.timeout(120)
def test_a_killed_receiver_keeps_every_acknowledged_batch_whole_and_counts_none_twice(
    database_url, engine, tmp_path
):
    assert P402.exists(), f"no p402 console script beside {sys.executable}"
    identity, key = create_key(engine, tenant="acme", role=Role.INGEST)
    read_key = create_key(engine, tenant="acme", role=Role.READ)[1]
    bodies = _batches()
    port = _free_port()
    server = Server(database_url, port, tmp_path / "server-1.log")
    try:
        stream = Stream(server.url, key, bodies)
        senders = stream.send(list(range(BATCHES)))
        deadline = time.monotonic() + 60
        while stream.count_acknowledged() < KILL_AFTER:
            assert time.monotonic() < deadline, "the stream stalled before the kill"
            assert not stream.refused, stream.refused
            time.sleep(0.002)
        killed_at = server.kill()
        for thread in senders:
            thread.join(timeout=60)
            assert not thread.is_alive()
    finally:
        server.stop()

    acknowledged = set(stream.acknowledged)
    assert not stream.refused, f"the server refused batches: {stream.refused}"
    assert KILL_AFTER <= len(acknowledged) < BATCHES, "the kill did not land mid-stream"
    assert set(stream.transport_errors) == set(range(BATCHES)) - acknowledged
    early = {n: e for n, (e, at) in stream.transport_errors.items() if at < killed_at}
    assert not early, f"batches failed while the server was up: {early}"

    server = Server(database_url, port, tmp_path / "server-2.log")  # same database, same port
    try:
        stored = _ledger_batches(engine, identity.tenant_id)
        whole = (SPANS_PER_BATCH, SPANS_PER_BATCH)
        lost = sorted(n for n in acknowledged if stored.get(n) != whole)
        assert not lost, f"acknowledged batches not whole in the ledger: {lost} {stored}"
        partial = {n: counts for n, counts in stored.items() if counts != whole}
        assert not partial, f"partly stored batches (events, distinct ids): {partial}"
        assert set(stored) <= set(range(BATCHES))
        # the spend rollups, written in the same transactions, agree with the events
        _assert_spend_matches_the_events(server.url, read_key, engine, identity.tenant_id)

        # the sender's retry: every unacknowledged batch again, and a few acknowledged ones
        retried = sorted(set(range(BATCHES)) - acknowledged) + sorted(acknowledged)[:5]
        retry = Stream(server.url, key, bodies)
        for thread in retry.send(retried):
            thread.join(timeout=60)
            assert not thread.is_alive()
        assert not retry.refused, retry.refused
        assert not retry.transport_errors, retry.transport_errors
        assert retry.acknowledged == set(retried)

        final = _ledger_batches(engine, identity.tenant_id)
        assert final == dict.fromkeys(range(BATCHES), whole)
        totals = _assert_spend_matches_the_events(server.url, read_key, engine, identity.tenant_id)
        assert totals == {
            "events": BATCHES * SPANS_PER_BATCH,
            "input_tokens": BATCHES * sum(100 + span for span in range(SPANS_PER_BATCH)),
            "output_tokens": SPANS_PER_BATCH * sum(10 + batch for batch in range(BATCHES)),
        }
    finally:
        server.stop()
