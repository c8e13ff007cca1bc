"""Webhooks: configured by admins, sent each alert as signed JSON, retried with backoff across
restarts until delivered or given up."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from p402.api import create_app
from p402.api.scheduler import Scheduler
from p402.ledger.alerts import Crossing, record_alert
from p402.ledger.keys import Role, create_key
from p402.ledger.webhook_destinations import ALLOW_PRIVATE_ENV
from p402.ledger.webhooks import MAX_ATTEMPTS, DeliveryRun, deliver_due, retry_delay_ms

SECRET = "test-secret-of-the-receiver-0123"


class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST with the next scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.arrived.append(time.monotonic())
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/p402"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (the README's snippet)."""
    timestamp = headers["x-p402-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + expected.hexdigest(), headers["x-p402-signature"])


class Clock:
    def __init__(self, ms: int = 1_800_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(autouse=True)
def private_destinations_allowed(monkeypatch) -> None:
    """The receivers of these tests listen on 127.0.0.1, as on a private deployment."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "true")


@pytest.fixture
def api(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, scheduler=False)) as client:
        yield client


def _admin(engine, tenant: str = "acme") -> tuple[int, dict[str, str]]:
    identity, key = create_key(engine, tenant=tenant, role=Role.ADMIN)
    return identity.tenant_id, {"authorization": f"Bearer {key}"}


def _fire(engine, tenant_id: int, now_ms: int, threshold: str = "80", name: str = "legal") -> dict:
    crossing = Crossing(
        scope="department",
        name=name,
        period="month",
        period_start_ms=1_798_761_600_000,
        period_end_ms=1_801_440_000_000,
        threshold=threshold,
        spent_picos=820 * 10**12,
        cap_picos=1000 * 10**12,
        projected_picos=1100 * 10**12,
    )
    with engine.begin() as connection:
        alert = record_alert(connection, tenant_id, crossing, now_ms)
    assert alert is not None
    return alert


def _deliveries(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text("SELECT status, attempts, last_status_code FROM webhook_delivery ORDER BY id")
            )
        ]


def test_webhooks_are_configured_by_admins_and_secrets_shown_once(engine, api, keys):
    _, admin = _admin(engine)
    put = api.put(
        "/v1/webhooks",
        json=[
            {"url": "https://hooks.example/a", "secret": SECRET},
            {"url": "https://hooks.example/b"},
        ],
        headers=admin,
    )
    assert put.status_code == 200, put.text
    first, second = put.json()["data"]
    assert first["secret"] == SECRET
    assert second["secret"].startswith("whsec_") and len(second["secret"]) > 32
    listed = api.get("/v1/webhooks", headers=admin).json()["data"]
    assert [hook["url"] for hook in listed] == [
        "https://hooks.example/a",
        "https://hooks.example/b",
    ]
    assert all("secret" not in hook for hook in listed)

    # Keeping a URL keeps its id and secret; leaving one out removes it.
    again = api.put("/v1/webhooks", json=[{"url": "https://hooks.example/b"}], headers=admin)
    (kept,) = again.json()["data"]
    assert kept["id"] == second["id"] and "secret" not in kept
    assert [h["id"] for h in api.get("/v1/webhooks", headers=admin).json()["data"]] == [
        second["id"]
    ]

    for role in ("read", "ingest"):
        bearer = {"authorization": f"Bearer {keys[role]}"}
        assert api.get("/v1/webhooks", headers=bearer).status_code == 403
        assert api.put("/v1/webhooks", json=[], headers=bearer).status_code == 403
    _, globex_admin = _admin(engine, "globex")
    assert api.get("/v1/webhooks", headers=globex_admin).json()["data"] == []


def test_webhooks_page_with_a_cursor_oldest_first(engine, api):
    _, admin = _admin(engine)
    urls = [f"https://hooks.example/{name}" for name in ("c", "a", "b")]
    assert api.put("/v1/webhooks", json=[{"url": url} for url in urls], headers=admin).is_success
    first = api.get("/v1/webhooks?limit=2", headers=admin).json()
    rest = api.get(f"/v1/webhooks?limit=2&cursor={first['next_cursor']}", headers=admin).json()
    assert [hook["url"] for hook in first["data"] + rest["data"]] == sorted(urls)
    assert (len(first["data"]), rest["next_cursor"]) == (2, None)
    bad = api.get("/v1/webhooks?cursor=zzz", headers=admin)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "https://x.example"}, "JSON list"),
        ([{"url": "ftp://x.example"}], "http:// or https://"),
        ([{"url": "https://x.example", "secret": "short"}], "secret must be"),
        ([{"url": "https://x.example", "token": "x"}], "unknown field"),
        ([{"url": "https://x.example"}, {"url": "https://x.example"}], "once"),
    ],
)
def test_invalid_webhook_configurations_are_refused_whole(engine, api, body, message):
    _, admin = _admin(engine)
    response = api.put("/v1/webhooks", json=body, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhooks"
    assert message in response.json()["error"]["message"]
    assert api.get("/v1/webhooks", headers=admin).json()["data"] == []


def test_an_alert_is_signed_retried_with_backoff_across_restarts_and_delivered(engine, api):
    tenant_id, admin = _admin(engine)
    clock = Clock()
    with Receiver([500, 503]) as receiver:  # fails twice, then accepts
        api.put("/v1/webhooks", json=[{"url": receiver.url, "secret": SECRET}], headers=admin)
        alert = _fire(engine, tenant_id, clock())

        def restart_and_run() -> None:  # a new server each time: nothing is kept in memory
            scheduler = Scheduler(engine, clock=clock, environ={})
            assert scheduler.run_once("webhooks").ran
            scheduler.shutdown()

        restart_and_run()
        assert _deliveries(engine) == [("pending", 1, 500)]
        restart_and_run()  # not due yet
        assert len(receiver.requests) == 1

        clock.ms += retry_delay_ms(1)
        assert retry_delay_ms(1) == 30_000
        restart_and_run()
        assert _deliveries(engine) == [("pending", 2, 503)]

        clock.ms += retry_delay_ms(2) - 1
        restart_and_run()
        assert len(receiver.requests) == 2  # backoff doubled: 60 s
        clock.ms += 1
        restart_and_run()
        assert _deliveries(engine) == [("delivered", 3, 200)]
        restart_and_run()
        assert len(receiver.requests) == 3
        (hook,) = api.get("/v1/webhooks", headers=admin).json()["data"]
        assert hook["deliveries"] == {"pending": 0, "delivered": 1, "failed": 0}

    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # the same body every time
    assert json.loads(bodies.pop()) == {"type": "budget.alert", "alert": alert}
    assert alert["threshold"] == 80 and alert["spent_usd"] == "820" and alert["cap_usd"] == "1000"
    for headers, body in receiver.requests:
        assert verify(SECRET, headers, body)
        assert not verify("another-secret-entirely-0000", headers, body)
        assert headers["content-type"] == "application/json"
        assert headers["x-p402-event"] == "budget.alert"
    delivery_ids = {headers["x-p402-delivery"] for headers, _ in receiver.requests}
    assert delivery_ids == {f"{hook['id']}.{alert['id']}"}  # no counter of all deliveries
    timestamps = [int(headers["x-p402-timestamp"]) for headers, _ in receiver.requests]
    start = 1_800_000_000
    assert timestamps == [start, start + 30, start + 90]


def test_a_delivery_waiting_for_its_retry_holds_back_the_webhooks_later_ones(engine, api):
    tenant_id, admin = _admin(engine)
    clock = Clock()
    with Receiver([500]) as receiver:  # the first attempt fails
        api.put("/v1/webhooks", json=[{"url": receiver.url, "secret": SECRET}], headers=admin)
        _fire(engine, tenant_id, clock(), "80")
        assert deliver_due(engine, clock()) == DeliveryRun(0, 1, 0)
        clock.ms += 1_000
        _fire(engine, tenant_id, clock(), "90")
        _fire(engine, tenant_id, clock(), "95")
        clock.ms += 1_000
        assert deliver_due(engine, clock()) == DeliveryRun(0, 0, 0)  # behind the 80 % one
        clock.ms += retry_delay_ms(1)
        assert deliver_due(engine, clock()) == DeliveryRun(3, 0, 0)
    sent = [json.loads(body)["alert"]["threshold"] for _, body in receiver.requests]
    assert sent == [80, 80, 90, 95]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_delivery_is_given_up_after_the_last_attempt(engine, api):
    tenant_id, admin = _admin(engine)
    clock = Clock()
    with Receiver([500] * 100) as receiver:
        api.put(
            "/v1/webhooks",
            json=[
                {"url": receiver.url, "secret": SECRET},
                {"url": f"http://127.0.0.1:{_closed_port()}/down", "secret": SECRET},
            ],
            headers=admin,
        )
        _fire(engine, tenant_id, clock())
        scheduler = Scheduler(engine, clock=clock, environ={})
        for attempt in range(1, MAX_ATTEMPTS + 1):
            assert scheduler.run_once("webhooks").ran
            clock.ms += retry_delay_ms(attempt)
        scheduler.run_once("webhooks")
        assert len(receiver.requests) == MAX_ATTEMPTS
    assert _deliveries(engine) == [("failed", MAX_ATTEMPTS, 500), ("failed", MAX_ATTEMPTS, None)]
    with engine.connect() as connection:
        errors = connection.execute(
            text("SELECT last_error FROM webhook_delivery ORDER BY id")
        ).scalars()
        assert [error.split(":")[0] for error in errors] == ["HTTP 500", "ConnectError"]
    assert retry_delay_ms(MAX_ATTEMPTS) == 3_600_000  # at most an hour apart


def test_each_alert_goes_to_the_tenants_own_webhooks_only(engine, api):
    acme_id, acme_admin = _admin(engine)
    globex_id, globex_admin = _admin(engine, "globex")
    clock = Clock()
    with Receiver([]) as acme_hook, Receiver([]) as globex_hook:
        api.put("/v1/webhooks", json=[{"url": acme_hook.url, "secret": SECRET}], headers=acme_admin)
        api.put(
            "/v1/webhooks", json=[{"url": globex_hook.url, "secret": SECRET}], headers=globex_admin
        )
        _fire(engine, acme_id, clock())
        Scheduler(engine, clock=clock, environ={}).run_once("webhooks")
        assert len(acme_hook.requests) == 1
        assert globex_hook.requests == []
    assert globex_id != acme_id


def test_a_destination_that_does_not_answer_holds_up_no_other_tenants_webhook(engine, api):
    acme_id, acme_admin = _admin(engine)
    globex_id, globex_admin = _admin(engine, "globex")
    clock = Clock()
    timeout = 1.0
    with socket.socket() as silent, Receiver([]) as globex_hook:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are taken, never answered
        silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        api.put("/v1/webhooks", json=[{"url": silent_url, "secret": SECRET}], headers=acme_admin)
        api.put(
            "/v1/webhooks", json=[{"url": globex_hook.url, "secret": SECRET}], headers=globex_admin
        )
        for threshold in ("80", "90", "95"):  # acme's three deliveries are due first
            _fire(engine, acme_id, clock(), threshold)
        _fire(engine, globex_id, clock())
        started = time.monotonic()
        with httpx.Client(timeout=timeout) as client:
            run = deliver_due(engine, clock(), client=client)
        elapsed = time.monotonic() - started
        arrived = [moment - started for moment in globex_hook.arrived]
    assert run == DeliveryRun(delivered=1, retrying=1, given_up=0)
    assert len(arrived) == 1 and arrived[0] < timeout  # not behind acme's timeouts
    assert elapsed < 2 * timeout  # one attempt at the silent destination, not three
    assert _deliveries(engine) == [("pending", 1, None), ("pending", 0, None),
                                   ("pending", 0, None), ("delivered", 1, 200)]  # fmt: skip
    with engine.connect() as connection:
        error = connection.execute(
            text("SELECT last_error FROM webhook_delivery ORDER BY id LIMIT 1")
        ).scalar_one()
    assert error.startswith("ReadTimeout")

    clock.ms += 10_000  # the next run: acme's first delivery is not due again yet
    assert deliver_due(engine, clock()) == DeliveryRun(delivered=0, retrying=0, given_up=0)
    clock.ms += retry_delay_ms(1)  # its retry (the port now refuses), and nothing behind it
    run = deliver_due(engine, clock())
    assert run == DeliveryRun(delivered=0, retrying=1, given_up=0)
    assert [row[1] for row in _deliveries(engine)] == [2, 0, 0, 1]


def test_a_backlog_at_one_webhook_leaves_every_other_webhook_its_turn(engine, api):
    acme_id, acme_admin = _admin(engine)
    globex_id, globex_admin = _admin(engine, "globex")
    clock = Clock()
    with Receiver([500] * 1000) as failing, Receiver([]) as globex_hook:
        api.put("/v1/webhooks", json=[{"url": failing.url, "secret": SECRET}], headers=acme_admin)
        api.put(
            "/v1/webhooks", json=[{"url": globex_hook.url, "secret": SECRET}], headers=globex_admin
        )
        for department in range(30):  # 120 deliveries due at acme's webhook, oldest first
            for threshold in ("80", "90", "95", "100"):
                _fire(engine, acme_id, clock(), threshold, name=f"department-{department}")
        clock.ms += 1
        _fire(engine, globex_id, clock())
        run = deliver_due(engine, clock())
        assert len(globex_hook.requests) == 1  # in the first run, behind 120 older ones
        assert len(failing.requests) == 1
    assert run == DeliveryRun(delivered=1, retrying=1, given_up=0)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[fd00::1]",
        "localhost",
        "api.localhost",
    ],
)
def test_webhooks_to_non_public_hosts_are_refused_by_default(engine, api, monkeypatch, host):
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    _, admin = _admin(engine)
    response = api.put(
        "/v1/webhooks", json=[{"url": f"http://{host}:8080/hook", "secret": SECRET}], headers=admin
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_webhooks"
    assert "public" in response.json()["error"]["message"]
    assert ALLOW_PRIVATE_ENV in response.json()["error"]["message"]
    assert api.get("/v1/webhooks", headers=admin).json()["data"] == []

    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "true")
    allowed = api.put(
        "/v1/webhooks", json=[{"url": f"http://{host}:8080/hook", "secret": SECRET}], headers=admin
    )
    assert allowed.status_code == 200, allowed.text


def test_public_hosts_and_names_are_accepted_by_default(engine, api, monkeypatch):
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    _, admin = _admin(engine)
    hooks = [
        {"url": "https://hooks.example.com/p402", "secret": SECRET},
        {"url": "https://8.8.8.8/hook", "secret": SECRET},
        {"url": "https://[2001:4860:4860::8888]/hook", "secret": SECRET},
    ]
    response = api.put("/v1/webhooks", json=hooks, headers=admin)
    assert response.status_code == 200, response.text


def test_a_delivery_never_connects_to_a_non_public_address(engine, api, monkeypatch):
    """Checked where the connection is opened: a URL stored while private destinations
    were allowed, and a name whose DNS answer is private, reach nothing once they are not."""
    tenant_id, admin = _admin(engine)
    clock = Clock()
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):  # DNS answering a private address
        if host == "hooks.rebinding.example":
            return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with Receiver([]) as receiver:
        port = receiver.server.server_address[1]
        named = f"http://hooks.rebinding.example:{port}/hooks/p402"
        put = api.put(
            "/v1/webhooks",
            json=[{"url": receiver.url, "secret": SECRET}, {"url": named, "secret": SECRET}],
            headers=admin,
        )
        assert put.status_code == 200, put.text
        monkeypatch.delenv(ALLOW_PRIVATE_ENV)  # e.g. the server restarted without it
        _fire(engine, tenant_id, clock())
        scheduler = Scheduler(engine, clock=clock, environ={})
        assert scheduler.run_once("webhooks").ran
        scheduler.shutdown()
        assert receiver.requests == []
        assert _deliveries(engine) == [("pending", 1, None), ("pending", 1, None)]
        hooks = api.get("/v1/webhooks", headers=admin).json()["data"]
        assert [hook["last_error"] for hook in hooks] == [
            f"DestinationRefused: 127.0.0.1 resolves to 127.0.0.1, not a public internet address "
            f"(set {ALLOW_PRIVATE_ENV}=true to allow deliveries on private networks)",
            f"DestinationRefused: hooks.rebinding.example resolves to 127.0.0.1, not a public "
            f"internet address (set {ALLOW_PRIVATE_ENV}=true to allow deliveries on private "
            f"networks)",
        ]

        monkeypatch.setenv(ALLOW_PRIVATE_ENV, "true")  # allowed again: both are delivered
        clock.ms += retry_delay_ms(1)
        scheduler = Scheduler(engine, clock=clock, environ={})
        assert scheduler.run_once("webhooks").ran
        scheduler.shutdown()
        assert len(receiver.requests) == 2
        assert {headers["host"] for headers, _ in receiver.requests} == {
            f"127.0.0.1:{port}",
            f"hooks.rebinding.example:{port}",
        }
    assert _deliveries(engine) == [("delivered", 2, 200), ("delivered", 2, 200)]
