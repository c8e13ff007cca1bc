"""Acceptance: no economic event is lost while the P402 receiver is down, and none counts
twice once it is back. Every component is real:

openai SDK → stand-in provider → P402 instrumentation → on-disk spool → OTLP/HTTP → P402
server (stopped, then started again on the same port) → ledger (SQLite and PostgreSQL) → API.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from openai import OpenAI
from sqlalchemy import Engine

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor, owner
from p402.instrumentation.testing import StandInProvider
from p402.ledger.keys import Role, create_key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _receiver(engine: Engine, port: int) -> BackgroundServer:
    return BackgroundServer(create_app(engine), port=port).start()


def _chat(standin: StandInProvider, calls: int, employee: str) -> None:
    with (
        OpenAI(base_url=standin.url("/v1"), api_key="sk-test", max_retries=0) as client,
        owner(department="legal", employee=employee),
    ):
        for _ in range(calls):
            reply = client.chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": "capital of France?"}]
            )
            assert reply.choices[0].message.content == "Paris is the capital of France."


def _spooled(spool: Path) -> list[Path]:
    return list(spool.glob("*.batch*")) if spool.exists() else []


def _events_when(url: str, read_key: str, count: int) -> list[dict[str, object]]:
    """The tenant's events once there are ``count`` of them and the count holds."""
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, headers={"x-p402-api-key": read_key}) as api:
        while time.monotonic() < deadline:
            events: list[dict[str, object]] = api.get("/v1/events").json()["data"]
            if len(events) >= count:
                time.sleep(1.5)  # more than the first retry delay: nothing else arrives
                events = api.get("/v1/events").json()["data"]
                assert api.get("/v1/spend").json()["total"]["events"] == len(events)
                return events
            time.sleep(0.1)
    raise AssertionError(f"expected {count} events in the ledger")


def _assert_each_once(events: list[dict[str, object]], count: int) -> None:
    ids = [event["id"] for event in events]
    assert len(ids) == count
    assert len(set(ids)) == count


def test_events_made_during_an_outage_arrive_exactly_once_when_it_ends(engine, standin, tmp_path):
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    spool = tmp_path / "spool"
    receiver = _receiver(engine, port)
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        endpoint=url,
        api_key=ingest_key,
        providers=f"openai={standin.url('/v1')}",
        spool_dir=spool,
    )
    try:
        _chat(standin, 2, employee="before")
        assert instrumentor.force_flush()
        assert _spooled(spool) == []

        receiver.stop()  # the outage
        _chat(standin, 3, employee="during")
        assert not instrumentor.force_flush(timeout_millis=5_000)  # kept, not sent
        assert len(_spooled(spool)) >= 1

        receiver = _receiver(engine, port)  # back, on the same port; no new calls
        events = _events_when(url, read_key, 5)
        deadline = time.monotonic() + 10
        while _spooled(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _spooled(spool) == []
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()
        receiver.stop()

    _assert_each_once(events, 5)
    assert sorted(str(event["employee"]) for event in events) == ["before"] * 2 + ["during"] * 3
    assert len(standin.requests) == 5


def test_events_spooled_by_a_stopped_process_are_delivered_by_the_next_one(
    engine, standin, tmp_path
):
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    port = _free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}"
    spool = tmp_path / "spool"
    settings = {
        "endpoint": url,
        "api_key": ingest_key,
        "providers": f"openai={standin.url('/v1')}",
        "spool_dir": spool,
    }
    instrumentor = P402Instrumentor()
    instrumentor.instrument(**settings)
    try:
        _chat(standin, 4, employee="alice")
        assert not instrumentor.force_flush(timeout_millis=5_000)
    finally:
        instrumentor.uninstrument()  # its last attempt fails: the events stay on disk
    assert len(_spooled(spool)) >= 1

    receiver = _receiver(engine, port)
    instrumentor.instrument(**settings)  # the next process; it makes no call of its own
    try:
        events = _events_when(url, read_key, 4)
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()
        receiver.stop()

    _assert_each_once(events, 4)
    assert _spooled(spool) == []
