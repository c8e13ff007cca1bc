"""``POST /v1/authorize`` is answered straight on ASGI (strict enforcement's round trip); its
answers are those of the route handler that documents it, through the framework's router."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

import p402.api.app
import p402.api.routes.policies
from p402.api import create_app
from p402.api.routes.policies import answer_authorize
from p402.api.server import BackgroundServer
from p402.ledger import clock

NOW = clock.from_iso("2026-11-11T00:00:00Z")


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch):
    monkeypatch.setattr(clock, "now_ms", lambda: NOW)


class _RouterOnly:
    """The same app, every request through the framework's router and handlers."""

    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await Litestar.__call__(self.app, scope, receive, send)


def _call(event_id: str, **changes: Any) -> bytes:
    project = event_id.partition("-")[0]  # each way of answering spends its own budget
    body = {
        "event_id": event_id,
        "provider": "openai",
        "model": "gpt-5",
        "owner": {"department": "legal", "project": project},
        "max_cost_usd": "0.6",
        **changes,
    }
    return json.dumps(body).encode()


def _requests(keys: dict[str, str], prefix: str) -> list[tuple[str, dict[str, str], bytes]]:
    ingest = {"x-p402-api-key": keys["ingest"]}
    return [
        ("allowed", ingest, _call(f"{prefix}-1", model="gpt-5-mini")),
        ("downgraded", ingest, _call(f"{prefix}-2", model="o3")),
        ("blocked at the cap", ingest, _call(f"{prefix}-3", max_cost_usd="5")),
        ("asked again", ingest, _call(f"{prefix}-1", model="gpt-5-mini")),
        ("bearer key", {"authorization": f"Bearer {keys['admin']}"}, _call(f"{prefix}-4")),
        ("no key", {}, _call(f"{prefix}-5")),
        ("unknown key", {"x-p402-api-key": "p402_nope"}, _call(f"{prefix}-6")),
        ("read role", {"x-p402-api-key": keys["read"]}, _call(f"{prefix}-7")),
        ("not JSON", ingest, b"{"),
        ("not UTF-8", ingest, b'{"event_id": "\xff"}'),
        ("nested too deeply", ingest, b"[" * 100_000 + b"]" * 100_000),
        ("unknown field", ingest, _call(f"{prefix}-8", colour="blue")),
        ("no bound", ingest, _call(f"{prefix}-9", max_cost_usd=None)),
        ("empty", ingest, b""),
        ("too large", ingest, b" " * 1_000_001),
    ]


def _anonymous(answer: Any, prefix: str) -> Any:
    """The answer with this way's own names (its event ids and project) made one."""
    return json.loads(json.dumps(answer).replace(prefix, "*"))


@pytest.fixture
def app(engine, keys) -> Litestar:
    app = create_app(engine, scheduler=False)
    with TestClient(app) as client:
        admin = {"x-p402-api-key": keys["admin"]}
        budgets = [
            {"scope": "project", "name": name, "cap_usd": "2", "action_at_cap": "block"}
            for name in ("direct", "routed", "real")
        ]
        assert client.put("/v1/budgets", json=budgets, headers=admin).status_code == 200
        policy = {"department": "legal", "max_model": "gpt-5"}
        assert client.put("/v1/policies", json=policy, headers=admin).status_code == 200
    return app


async def _answers(app: Any, keys: dict[str, str], prefix: str) -> list[tuple[str, int, Any]]:
    answers = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p402") as client:
        for label, headers, body in _requests(keys, prefix):
            response = await client.post("/v1/authorize", content=body, headers=headers)
            assert response.headers["content-type"].startswith("application/json"), label
            answers.append((label, response.status_code, _anonymous(response.json(), prefix)))
    return answers


def test_the_direct_answers_are_the_route_handlers_answers(app, keys, monkeypatch):
    answered_directly = []

    async def counted(*arguments: Any) -> None:
        answered_directly.append(True)
        await answer_authorize(*arguments)

    monkeypatch.setattr(p402.api.app, "answer_authorize", counted)
    direct = asyncio.run(_answers(app, keys, "direct"))
    assert len(answered_directly) == len(direct)
    routed = asyncio.run(_answers(_RouterOnly(app), keys, "routed"))
    assert len(answered_directly) == len(direct)
    assert direct == routed
    statuses = {label: status for label, status, _ in direct}
    assert statuses == {
        "allowed": 200,
        "downgraded": 200,
        "blocked at the cap": 200,
        "asked again": 200,
        "bearer key": 200,
        "no key": 401,
        "unknown key": 401,
        "read role": 403,
        "not JSON": 400,
        "not UTF-8": 400,
        "nested too deeply": 400,
        "unknown field": 400,
        "no bound": 400,
        "empty": 400,
        "too large": 413,
    }
    decisions = {label: answer.get("decision") for label, _, answer in direct}
    assert decisions["allowed"] == "allow"
    assert decisions["downgraded"] == "downgrade"
    assert decisions["blocked at the cap"] == "block"
    assert direct[3][2]["reason"] == "already authorised"


def test_over_a_real_server_other_methods_still_get_the_routers_answer(app, keys):
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        headers = {"x-p402-api-key": keys["ingest"]}
        answered = client.post("/v1/authorize", content=_call("real-1"), headers=headers)
        assert answered.status_code == 200
        assert answered.json()["decision"] == "allow"
        assert int(answered.headers["content-length"]) == len(answered.content)
        refused = client.get("/v1/authorize", headers=headers)
        assert refused.status_code == 405
        assert refused.json()["error"]["code"] == "method_not_allowed"


def test_an_unexpected_error_is_a_logged_500_either_way(app, keys, monkeypatch, caplog):
    def broken(*arguments: Any, **options: Any) -> Any:
        raise RuntimeError("the ledger broke")

    monkeypatch.setattr(p402.api.routes.policies, "_authorize", broken)

    async def post(target: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=target)
        async with httpx.AsyncClient(transport=transport, base_url="http://p402") as client:
            headers = {"x-p402-api-key": keys["ingest"]}
            return await client.post("/v1/authorize", content=_call("direct-1"), headers=headers)

    for way in (app, _RouterOnly(app)):
        caplog.clear()
        response = asyncio.run(post(way))
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "internal server error"}
        }
        assert "the ledger broke" in caplog.text
        assert any(record.exc_info for record in caplog.records)  # with its traceback
