"""The durable exporter against a real local OTLP/HTTP endpoint that can fail or be down.

Spans come from a real SDK ``TracerProvider`` (one batch per span through a
``SimpleSpanProcessor``); the endpoint is a ``ThreadingHTTPServer`` on 127.0.0.1 that
records every body it accepts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.instrumentation.conftest import exported_span_names

from p402.instrumentation import ConfigurationError
from p402.instrumentation._spool import SpoolingSpanExporter, _pool_for
from p402.instrumentation.config import DEFAULT_SPOOL_MAX_BYTES, P402Config

SPOOL_LOGGER = "p402.instrumentation._spool"


class Endpoint:
    """A P402-like ``/v1/traces`` endpoint: answers ``status`` (after ``delay`` seconds) and
    records each body it answered 2xx with, with its API key; ``stop()`` takes it down."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.status = 200
        self.delay = 0.0
        self.accepted: list[tuple[str, list[str]]] = []  # (api key, span names)
        self.requests = 0
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def start(self) -> Endpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces"
                assert self.headers["content-type"] == "application/x-protobuf"
                time.sleep(endpoint.delay)
                with endpoint.lock:
                    endpoint.requests += 1
                    status = endpoint.status
                    if 200 <= status < 300:
                        names = exported_span_names(body)
                        endpoint.accepted.append((self.headers["x-p402-api-key"], names))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def names(self) -> list[str]:
        with self.lock:
            return [name for _, names in self.accepted for name in names]


class Pipeline:
    """A real ``TracerProvider`` exporting each span at once through one exporter."""

    def __init__(self, exporter: SpoolingSpanExporter) -> None:
        self.exporter = exporter
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("test")

    def emit(self, *names: str) -> None:
        for name in names:
            with self.tracer.start_as_current_span(name):
                pass


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def batch_files(directory: Path) -> list[str]:
    """The batches in the spool, whether or not a retry thread holds a claim on them now."""
    if not directory.exists():
        return []
    return sorted(p.name.partition(".sending-")[0] for p in directory.glob("*.batch*"))


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """The endpoint, down until the test starts it."""
    running = Endpoint()
    yield running
    running.stop()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def make_pipeline(endpoint: Endpoint, spool_dir: Path) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(api_key: str = "p402_test", **options: Any) -> Pipeline:
        options = {"max_bytes": 1 << 20, "min_backoff": 0.05, "max_backoff": 0.2} | options
        options.setdefault("headers", {"x-p402-api-key": api_key})
        pipeline = Pipeline(
            SpoolingSpanExporter(endpoint.url, options.pop("spool_dir", spool_dir), **options)
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.provider.shutdown()


def test_a_batch_is_delivered_at_once_when_the_endpoint_is_up(endpoint, make_pipeline, spool_dir):
    endpoint.start()
    pipeline = make_pipeline(api_key="p402_key")
    pipeline.emit("e0", "e1")
    assert endpoint.accepted == [("p402_key", ["e0"]), ("p402_key", ["e1"])]
    assert not spool_dir.exists()  # nothing touches the disk while all goes well
    assert pipeline.exporter.force_flush()


def test_batches_spooled_while_down_are_delivered_in_order_once_by_the_retry_thread(
    endpoint, make_pipeline, spool_dir
):
    pipeline = make_pipeline()
    pipeline.emit("e0", "e1", "e2")
    files = batch_files(spool_dir)
    assert len(files) == 3
    assert not pipeline.exporter.force_flush(timeout_millis=500)

    endpoint.start()  # no new spans: the retry thread alone must drain the spool
    wait_for(lambda: len(endpoint.names()) >= 3)
    wait_for(lambda: not batch_files(spool_dir))
    time.sleep(0.5)  # several more backoff periods: nothing is sent again
    assert endpoint.names() == ["e0", "e1", "e2"]
    assert endpoint.requests == 3
    assert pipeline.exporter.force_flush()
    assert list(spool_dir.iterdir()) == []


def test_new_batches_queue_behind_spooled_ones_for_every_retryable_failure(
    endpoint, make_pipeline, spool_dir
):
    pipeline = make_pipeline(min_backoff=60.0)  # only exports drain the spool here
    pipeline.emit("refused-connection")
    endpoint.start()
    for status in (500, 503, 429, 408):
        endpoint.status = status
        pipeline.emit(f"http-{status}")
    assert len(batch_files(spool_dir)) == 5
    assert {p.stat().st_mode & 0o777 for p in spool_dir.iterdir()} == {0o600}
    assert spool_dir.stat().st_mode & 0o777 == 0o700
    assert endpoint.accepted == []
    assert endpoint.requests == 4  # one try of the oldest batch per export, never the new one

    endpoint.status = 200
    pipeline.emit("new")
    assert endpoint.names() == [
        "refused-connection",
        "http-500",
        "http-503",
        "http-429",
        "http-408",
        "new",
    ]
    assert batch_files(spool_dir) == []


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_a_refused_batch_is_not_spooled(endpoint, make_pipeline, spool_dir, caplog, status):
    endpoint.start()
    endpoint.status = status
    pipeline = make_pipeline()
    with caplog.at_level(logging.ERROR, logger=SPOOL_LOGGER):
        result = pipeline.exporter.export(_finished_spans("refused"))
    assert result is SpanExportResult.FAILURE
    assert batch_files(spool_dir) == []
    assert f"refused a batch of economic events with HTTP {status}" in caplog.text
    endpoint.status = 200
    pipeline.emit("next")
    assert endpoint.names() == ["next"]


def test_a_full_spool_drops_new_batches_with_one_clear_warning(
    endpoint, make_pipeline, spool_dir, caplog
):
    probe = make_pipeline(spool_dir=spool_dir / "probe")
    probe.emit("x0")
    probe.provider.shutdown()
    (size,) = {p.stat().st_size for p in (spool_dir / "probe").glob("*.batch")}
    limit = int(size * 2.5)
    pipeline = make_pipeline(max_bytes=limit, min_backoff=60.0)

    with caplog.at_level(logging.WARNING, logger=SPOOL_LOGGER):
        pipeline.emit("x0", "x1", "x2", "x3", "x4")
    assert len(batch_files(spool_dir)) == 2
    assert pipeline.exporter.dropped_spans == 3
    full = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1  # at most once a minute
    assert str(spool_dir) in full[0]
    assert f"limit {limit} bytes" in full[0]
    assert "P402_SPOOL_MAX_BYTES" in full[0]
    assert "1 span(s) dropped so far" in full[0]

    endpoint.start()
    pipeline.emit("x5")
    assert endpoint.names() == ["x0", "x1", "x5"]
    assert pipeline.exporter.dropped_spans == 3


def test_exporters_sharing_a_directory_deliver_each_batch_exactly_once(
    endpoint, make_pipeline, spool_dir
):
    first, second = make_pipeline(), make_pipeline()
    first.emit(*(f"a{i}" for i in range(15)))
    second.emit(*(f"b{i}" for i in range(15)))
    assert len(batch_files(spool_dir)) == 30

    endpoint.delay = 0.01  # slow answers: both exporters' threads and flushes overlap
    endpoint.start()
    flushes = [threading.Thread(target=p.exporter.force_flush) for p in (first, second) * 2]
    for flush in flushes:
        flush.start()
    for flush in flushes:
        flush.join()
    wait_for(lambda: len(endpoint.names()) >= 30)
    time.sleep(0.5)
    names = endpoint.names()
    assert len(names) == 30
    assert Counter(names) == Counter([*(f"a{i}" for i in range(15)), *(f"b{i}" for i in range(15))])
    assert endpoint.requests == 30
    assert list(spool_dir.iterdir()) == []


def test_the_claim_of_a_crashed_process_is_taken_back_after_minutes(
    endpoint, make_pipeline, spool_dir
):
    pipeline = make_pipeline(min_backoff=60.0)
    pipeline.emit("crashed", "in-flight")
    crashed, in_flight = batch_files(spool_dir)
    os.rename(spool_dir / crashed, spool_dir / f"{crashed}.sending-999999")
    os.utime(spool_dir / f"{crashed}.sending-999999", (time.time() - 600, time.time() - 600))
    os.rename(spool_dir / in_flight, spool_dir / f"{in_flight}.sending-999998")

    endpoint.start()
    assert pipeline.exporter.force_flush()
    assert endpoint.names() == ["crashed"]
    assert [p.name for p in spool_dir.iterdir()] == [f"{in_flight}.sending-999998"]


def test_a_shared_directory_never_mixes_api_keys(endpoint, make_pipeline, spool_dir):
    tenant_a = make_pipeline(api_key="key_a", min_backoff=60.0)
    tenant_a.emit("a")
    endpoint.start()
    tenant_b = make_pipeline(api_key="key_b", min_backoff=60.0)
    tenant_b.emit("b")
    assert tenant_b.exporter.force_flush()
    assert endpoint.accepted == [("key_b", ["b"])]
    assert len(batch_files(spool_dir)) == 1  # tenant a's batch waits for tenant a
    assert tenant_a.exporter.force_flush()
    assert endpoint.accepted == [("key_b", ["b"]), ("key_a", ["a"])]


def test_the_spool_outlives_the_process_and_the_next_one_delivers_it(
    endpoint, make_pipeline, spool_dir
):
    before = make_pipeline()
    before.emit("left-0", "left-1")
    before.provider.shutdown()  # the last attempt fails: the endpoint is down
    assert len(batch_files(spool_dir)) == 2

    endpoint.start()
    make_pipeline()  # a new process; it exports nothing of its own
    wait_for(lambda: not batch_files(spool_dir) and len(endpoint.names()) == 2)
    assert endpoint.names() == ["left-0", "left-1"]


def test_shutdown_stops_the_retry_thread_and_tries_once_more(endpoint, make_pipeline, spool_dir):
    pipeline = make_pipeline(min_backoff=60.0)
    pipeline.emit("last")
    retry_thread = pipeline.exporter._thread
    assert retry_thread is not None and retry_thread.is_alive()
    endpoint.start()

    started = time.monotonic()
    pipeline.exporter.shutdown()
    assert time.monotonic() - started < 5
    assert not retry_thread.is_alive()
    assert endpoint.names() == ["last"]

    # After shutdown a batch is kept for the next process, not sent.
    assert pipeline.exporter.export(_finished_spans("late")) is SpanExportResult.SUCCESS
    assert endpoint.names() == ["last"]
    assert len(batch_files(spool_dir)) == 1


def test_a_timeout_spools_the_batch(endpoint, make_pipeline, spool_dir):
    endpoint.delay = 1.0
    endpoint.start()
    pipeline = make_pipeline(timeout=0.2, min_backoff=60.0)
    pipeline.emit("slow")
    assert len(batch_files(spool_dir)) == 1
    endpoint.delay = 0.0
    assert pipeline.exporter.force_flush()
    assert "slow" in endpoint.names()


def test_an_unwritable_spool_drops_without_raising(endpoint, make_pipeline, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    pipeline = make_pipeline(spool_dir=blocker / "spool")
    with caplog.at_level(logging.WARNING, logger=SPOOL_LOGGER):
        result = pipeline.exporter.export(_finished_spans("lost"))
    assert result is SpanExportResult.FAILURE
    assert pipeline.exporter.dropped_spans == 1
    assert "cannot be written" in caplog.text


def test_spool_settings_from_environment_and_keywords(tmp_path):
    default = P402Config.load({"XDG_CACHE_HOME": str(tmp_path)})
    assert default.spool_max_bytes == DEFAULT_SPOOL_MAX_BYTES == 64 * 1024 * 1024
    assert default.spool_dir is not None
    assert default.spool_dir.parent == tmp_path / "p402" / "spool"
    other = P402Config.load({"XDG_CACHE_HOME": str(tmp_path), "P402_ENDPOINT": "http://p402:1"})
    assert other.spool_dir != default.spool_dir  # one directory per endpoint

    env = {"P402_SPOOL_DIR": str(tmp_path / "env"), "P402_SPOOL_MAX_BYTES": "1024"}
    assert P402Config.load(env).spool_dir == tmp_path / "env"
    assert P402Config.load(env).spool_max_bytes == 1024
    keywords = P402Config.load(env, spool_dir=tmp_path / "kw", spool_max_bytes=0)
    assert (keywords.spool_dir, keywords.spool_max_bytes) == (tmp_path / "kw", 0)


@pytest.mark.parametrize("value", ["64MiB", "-1", "1.5", ""])
def test_an_unusable_spool_size_is_refused(value):
    with pytest.raises(
        ConfigurationError, match=r"P402_SPOOL_MAX_BYTES=.* is not a number of bytes"
    ):
        P402Config.load({}, spool_max_bytes=value)


def _finished_spans(name: str) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span(name):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_the_exporter_goes_through_the_proxy_the_environment_names(monkeypatch):
    for name in list(os.environ):
        if name.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    through_proxy = _pool_for("https://p402.example.com/v1/traces")
    assert isinstance(through_proxy, urllib3.ProxyManager)
    assert (through_proxy.proxy.host, through_proxy.proxy.port) == ("proxy.example", 3128)
    assert not isinstance(_pool_for("https://127.0.0.1:4318/v1/traces"), urllib3.ProxyManager)
    assert not isinstance(_pool_for("http://p402.example.com/v1/traces"), urllib3.ProxyManager)
