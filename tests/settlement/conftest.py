"""Settlement fixtures: events to seal, and a real anvil (Tempo mode) installed by npm."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import Role, create_key

REPO = Path(__file__).resolve().parents[2]
ANVIL_CACHE = REPO / ".cache" / "anvil"
ANVIL_BINARY = ANVIL_CACHE / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_VERSION = "1.7.1"
DEV_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
TEMPO_TESTNET = 42431

BASE_MS = 1_795_000_000_000  # 2026-11-18


def event(event_id: str, ts_ms: int = BASE_MS, **fields: object) -> EventRecord:
    values: dict[str, object] = {
        "usage_evidence": "provider_response",
        "cost_evidence": "computed",
        "privacy_mode": "metadata_only",
        "provider": "openai",
        "model_requested": "gpt-5-mini",
        "model_used": "gpt-5-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_picos": 1_250_000,
        "department": "legal",
        "employee": "alice",
    }
    values.update(fields)
    return EventRecord(event_id=event_id, ts_ms=ts_ms, **values)  # type: ignore[arg-type]


@dataclass
class Tenant:
    id: int
    ingest_key: str

    def ingest(self, engine, *records: EventRecord) -> int:
        return insert_events(engine, self.id, list(records))


@pytest.fixture
def acme(engine) -> Tenant:
    identity, key = create_key(engine, tenant="acme", role=Role.INGEST)
    return Tenant(identity.tenant_id, key)


@pytest.fixture
def globex(engine) -> Tenant:
    identity, key = create_key(engine, tenant="globex", role=Role.INGEST)
    return Tenant(identity.tenant_id, key)


# --- anvil ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def anvil_binary() -> Path:
    """The real anvil, installed from npm into .cache/anvil (once; skipped without npm)."""
    if ANVIL_BINARY.exists():
        return ANVIL_BINARY
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: it provides anvil (@foundry-rs/anvil)")
    ANVIL_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            npm,
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(ANVIL_CACHE),
            f"@foundry-rs/anvil@{ANVIL_VERSION}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert ANVIL_BINARY.exists(), f"npm installed no anvil binary at {ANVIL_BINARY}"
    return ANVIL_BINARY


class Anvil:
    """A running ``anvil --network tempo --hardfork T4`` on a free port."""

    def __init__(self, binary: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                str(binary),
                "--network",
                "tempo",
                "--hardfork",
                "T4",
                "--chain-id",
                str(TEMPO_TESTNET),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = self._wait_for_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _wait_for_port(self, timeout: float = 30.0) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            if match := re.search(r"Listening on 127\.0\.0\.1:(\d+)", line):
                return int(match.group(1))
        self.stop()
        raise RuntimeError("anvil did not start:\n" + "".join(seen[-20:]))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "_drainer"):
            self._drainer.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def anvil(anvil_binary) -> Iterator[Anvil]:
    node = Anvil(anvil_binary)
    yield node
    node.stop()


@pytest.fixture
def chain_env(anvil) -> dict[str, str]:
    return {"P402_CHAIN_RPC_URL": anvil.url, "P402_CHAIN_PRIVATE_KEY": DEV_KEY_0}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


def environment_without_chain() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("P402_CHAIN_")}


class Outage:
    """A TCP forwarder in front of a node, on a fixed port, that can go down and come back:
    while down, connections to its port are refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()

    def up(self) -> Outage:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        for end in list(self._open):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
            self._open.discard(end)
