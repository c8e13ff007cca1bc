"""The anomaly review queue over HTTP, and a running server flagging a session within 60 s of
its events arriving."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from litestar.testing import TestClient

from p402.api import create_app
from p402.api.scheduler import Scheduler
from p402.api.server import BackgroundServer
from p402.ledger.keys import Role, create_key

NOW = datetime.now(UTC)


def _event(event_id: str, session: str, days_ago: float, input_tokens: int, output_tokens: int):
    return {
        "id": event_id,
        "timestamp": (NOW - timedelta(days=days_ago)).isoformat(),
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "employee": "alice",
        "department": "legal",
        "session": session,
    }


HISTORY = [_event(f"past-{day}", f"alice-day-{day}", day, 1000, 200) for day in range(1, 6)]
BIG = [_event("big-1", "alice-big", 0, 10_000, 2_000)]  # 10 times the usual session
NORMAL = [_event("normal-1", "alice-normal", 0, 1500, 300)]


def _post(send, key: str, path: str, body: object):
    return send(
        path,
        content=json.dumps(body),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )


@pytest.fixture
def api(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, scheduler=False)) as client:
        yield client


def test_anomalies_are_listed_by_status_and_reviewed_by_admins_of_their_tenant(engine, api, keys):
    assert _post(api.post, keys["ingest"], "/v1/events", HISTORY + BIG + NORMAL).status_code == 200
    assert Scheduler(engine, environ={}).run_once("anomalies").ran
    read = {"x-p402-api-key": keys["read"]}

    (anomaly,) = api.get("/v1/anomalies", headers=read).json()["data"]
    assert (anomaly["session"], anomaly["employee"], anomaly["department"]) == (
        "alice-big",
        "alice",
        "legal",
    )
    assert (anomaly["cost_usd"], anomaly["baseline_usd"], anomaly["ratio"]) == (
        "0.0065",
        "0.00065",
        10.0,
    )
    assert anomaly["status"] == "open"
    assert api.get("/v1/anomalies?status=open", headers=read).json()["data"] == [anomaly]
    assert api.get("/v1/anomalies?status=dismissed", headers=read).json()["data"] == []
    bad = api.get("/v1/anomalies?status=closed", headers=read)
    assert bad.status_code == 400 and "error" in bad.json()

    path = f"/v1/anomalies/{anomaly['id']}/review"
    review = {"status": "dismissed", "note": "month-end contract batch, expected"}
    assert api.post(path, json=review, headers=read).status_code == 403
    globex_admin = create_key(engine, tenant="globex", role=Role.ADMIN)[1]
    other = api.post(path, json=review, headers={"x-p402-api-key": globex_admin})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert (
        api.get("/v1/anomalies", headers={"x-p402-api-key": keys["globex_read"]}).json()["data"]
        == []
    )

    admin = {"x-p402-api-key": keys["admin"]}
    done = api.post(path, json=review, headers=admin)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["note"]) == ("dismissed", review["note"])
    assert done.json()["reviewed_at"] is not None
    assert (
        api.get("/v1/anomalies?status=dismissed", headers=read).json()["data"][0]["id"]
        == anomaly["id"]
    )
    assert api.get("/v1/anomalies?status=open", headers=read).json()["data"] == []

    for body in ({"status": "open"}, {"status": "dismissed", "note": "x" * 2001}, {}):
        refused = api.post(path, json=body, headers=admin)
        assert refused.status_code == 400, body
    assert (
        api.post("/v1/anomalies/anm_unknown/review", json=review, headers=admin).status_code == 404
    )


def test_a_running_server_flags_an_anomalous_session_within_60_seconds(engine, keys, monkeypatch):
    monkeypatch.setenv("P402_ANOMALY_INTERVAL_SECONDS", "1")
    with BackgroundServer(create_app(engine)) as server, httpx.Client(base_url=server.url) as http:
        assert _post(http.post, keys["ingest"], "/v1/events", HISTORY + NORMAL).status_code == 200
        sent = time.monotonic()
        assert _post(http.post, keys["ingest"], "/v1/events", BIG).status_code == 200
        flagged = []
        while not flagged and time.monotonic() - sent < 60:
            time.sleep(0.1)
            flagged = http.get("/v1/anomalies", headers={"x-p402-api-key": keys["read"]}).json()[
                "data"
            ]
        latency = time.monotonic() - sent
    print(f"anomaly flagged {latency:.2f} s after its events arrived (job every 1 s)")
    assert [item["session"] for item in flagged] == ["alice-big"]
    assert latency < 60
