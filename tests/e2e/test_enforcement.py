"""Pre-call enforcement end to end, with every component real:

openai / anthropic / google-genai SDKs → P402 instrumentation (cached or strict) → stand-in
provider; the instrumentation's policy source and event sink are a running ``p402 serve``
app (SQLite and PostgreSQL), configured through its API.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor, owner
from p402.instrumentation.testing import StandInProvider
from p402.ledger import clock
from p402.ledger.keys import Role, create_key

PROMPT = "Summarise the attached supplier contract for the legal team. " * 25  # ~1.5 kB
CHAT_COST = Decimal("0.0005331")  # what the stand-in's chat completion costs (gpt-5-mini)


@dataclass
class Deployment:
    """A running P402 server with keys of every role, and the stand-in provider."""

    server: BackgroundServer
    standin: StandInProvider
    admin: httpx.Client
    read: httpx.Client
    ingest_key: str
    spool: Path

    def configure(self, path: str, body: object) -> None:
        response = self.admin.put(path, content=json.dumps(body))
        assert response.status_code == 200, response.text

    def instrument(self, **settings: Any) -> P402Instrumentor:
        instrumentor = P402Instrumentor()
        instrumentor.instrument(
            endpoint=self.server.url,
            api_key=self.ingest_key,
            spool_dir=self.spool,
            providers=",".join(
                [
                    f"openai={self.standin.url('/v1')}",
                    f"anthropic={self.standin.url('/anthropic')}",
                    f"gcp.gemini={self.standin.url('/gemini')}",
                ]
            ),
            **settings,
        )
        return instrumentor

    def events(self, count: int) -> list[dict[str, Any]]:
        """The tenant's events once there are ``count`` of them (and no more arrive)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events: list[dict[str, Any]] = self.read.get("/v1/events").json()["data"]
            if len(events) >= count:
                time.sleep(0.3)
                events = self.read.get("/v1/events").json()["data"]
                assert len(events) == count, [e["policy_result"] for e in events]
                return events
            time.sleep(0.05)
        raise AssertionError(f"expected {count} events in the ledger")


@pytest.fixture
def deployment(engine, standin, tmp_path, monkeypatch) -> Iterator[Deployment]:
    monkeypatch.setenv("P402_POLICY_REFRESH_SECONDS", "1")
    _, admin_key = create_key(engine, tenant="acme", role=Role.ADMIN)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    with (
        BackgroundServer(create_app(engine)) as server,
        httpx.Client(base_url=server.url, headers={"x-p402-api-key": admin_key}) as admin,
        httpx.Client(base_url=server.url, headers={"x-p402-api-key": read_key}) as read,
    ):
        yield Deployment(server, standin, admin, read, ingest_key, tmp_path / "spool")


def _openai(standin: StandInProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=standin.url("/v1"), api_key="sk-test", max_retries=2)


def _anthropic(standin: StandInProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=standin.url("/anthropic"), api_key="sk-ant-test")


def _gemini(standin: StandInProvider) -> genai.Client:
    options = genai_types.HttpOptions(base_url=standin.url("/gemini/"))
    return genai.Client(api_key="gemini-test", http_options=options)


async def _async_chat(standin: StandInProvider) -> openai.APIStatusError:
    async with openai.AsyncOpenAI(base_url=standin.url("/v1"), api_key="sk-test") as client:
        try:
            await client.chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as error:
            return error
    raise AssertionError("the call was not refused")


def _chat(client: openai.OpenAI, model: str = "gpt-5-mini") -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_completion_tokens=300,  # with the prompt's size: a bound above what it costs
    )


@pytest.mark.parametrize("mode", ["cached", "strict"])
def test_a_model_below_the_department_floor_gets_a_402_from_every_sdk(deployment, mode):
    deployment.configure(
        "/v1/policies", {"department": "legal", "min_model": "claude-sonnet-4-5"}
    )  # floor: standard
    instrumentor = deployment.instrument(enforcement=mode)
    standin = deployment.standin
    try:
        with (
            owner(department="legal", employee="alice"),
            _openai(standin) as oai,
            _anthropic(standin) as claude,
            _gemini(standin) as gemini,
        ):
            with pytest.raises(openai.APIStatusError) as openai_error:
                _chat(oai)
            with pytest.raises(anthropic.APIStatusError) as anthropic_error:
                claude.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hi"}],
                )
            with pytest.raises(genai_errors.ClientError) as gemini_error:
                gemini.models.generate_content(model="gemini-2.5-flash", contents="hi")
            async_error = asyncio.run(_async_chat(standin))
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()

    assert openai_error.value.status_code == 402
    assert "min_tier=standard" in openai_error.value.message
    assert anthropic_error.value.status_code == 402
    assert anthropic_error.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert gemini_error.value.code == 402
    assert async_error.status_code == 402  # the async client's send is refused the same way
    assert standin.requests == []  # nothing reached the provider
    # One event per call (no SDK retried), each blocked, with no usage and no cost.
    events = deployment.events(4)
    assert sorted(e["model_requested"] for e in events) == [
        "claude-haiku-4-5",
        "gemini-2.5-flash",
        "gpt-5-mini",
        "gpt-5-mini",
    ]
    for event in events:
        assert event["policy_result"] == "blocked"
        assert event["policy_reason"] == "dept_policy=quality-first, min_tier=standard"
        assert (event["cost_usd"], event["usage_evidence"]) == (None, "missing")
        assert (event["status_code"], event["department"]) == (402, "legal")


@pytest.mark.parametrize("mode", ["cached", "strict"])
def test_a_model_above_the_department_ceiling_is_sent_downgraded(deployment, mode):
    deployment.configure(
        "/v1/policies",
        [
            {"department": "marketing", "max_model": "gpt-5-mini", "routing": "cost-first"},
            {"department": "research", "max_model": "gemini-2.5-flash"},
        ],
    )
    instrumentor = deployment.instrument(enforcement=mode)
    standin = deployment.standin
    try:
        with _openai(standin) as oai, _gemini(standin) as gemini:
            with owner(department="marketing"):
                reply = _chat(oai, model="gpt-5")
            with owner(department="research"):
                gemini.models.generate_content(model="gemini-2.5-pro", contents="hi")
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()

    assert reply.choices[0].message.content == "Paris is the capital of France."
    openai_request, gemini_request = standin.requests
    assert openai_request.json()["model"] == "gpt-5-mini"  # the provider saw the downgrade
    assert openai_request.json()["messages"][0]["content"] == PROMPT
    assert gemini_request.path.split("?")[0] == "/gemini/v1/models/gemini-2.5-flash:generateContent"
    by_department = {e["department"]: e for e in deployment.events(2)}
    marketing, research = by_department["marketing"], by_department["research"]
    assert (marketing["model_original"], marketing["model_requested"]) == ("gpt-5", "gpt-5-mini")
    assert marketing["policy_result"] == "downgraded"
    assert marketing["policy_reason"] == "dept_policy=cost-first, max_tier=economy"
    assert marketing["cost_usd"] == str(CHAT_COST)
    assert (research["model_original"], research["model_requested"]) == (
        "gemini-2.5-pro",
        "gemini-2.5-flash",
    )
    assert research["policy_result"] == "downgraded"


def _spend_concurrently(
    client: openai.OpenAI, calls: int, **owners: str
) -> tuple[int, list[openai.APIStatusError]]:
    start = threading.Barrier(calls)

    def call(_: int) -> openai.APIStatusError | None:
        start.wait()
        with owner(**owners):
            try:
                _chat(client)
            except openai.APIStatusError as error:
                return error
        return None

    with ThreadPoolExecutor(max_workers=calls) as pool:
        outcomes = list(pool.map(call, range(calls)))
    refused = [error for error in outcomes if error is not None]
    return calls - len(refused), refused


def _cost_of(events: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(e["cost_usd"]) for e in events if e["cost_usd"]), Decimal(0))


def test_strict_mode_keeps_30_concurrent_calls_within_a_project_cap(deployment):
    cap = Decimal("0.005")  # room for a few calls' bounds (about 0.001 USD each)
    deployment.configure(
        "/v1/budgets",
        {"scope": "project", "name": "phoenix", "cap_usd": str(cap), "action_at_cap": "block"},
    )
    instrumentor = deployment.instrument(enforcement="strict")
    try:
        with _openai(deployment.standin) as client:
            sent, refused = _spend_concurrently(client, 30, department="legal", project="phoenix")
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()

    assert 0 < sent < 30
    assert all(error.status_code == 402 for error in refused)
    assert all("project=phoenix month at cap" in error.message for error in refused)
    assert len(deployment.standin.requests) == sent
    events = deployment.events(30)
    assert sum(e["policy_result"] == "blocked" for e in events) == len(refused)
    spent = _cost_of(events)
    assert spent == sent * CHAT_COST
    assert spent <= cap
    (budget,) = deployment.read.get("/v1/budgets").json()["data"]
    assert Decimal(budget["spent_usd"]) == spent
    assert budget["held_usd"] == "0"  # every hold was released when its event arrived


def test_cached_mode_stays_within_the_spend_of_other_processes_in_one_interval(deployment):
    cap = Decimal("0.005")
    deployment.configure(
        "/v1/budgets",
        {"scope": "project", "name": "phoenix", "cap_usd": str(cap), "action_at_cap": "block"},
    )
    instrumentor = deployment.instrument(enforcement="cached")
    try:
        with _openai(deployment.standin) as client:
            _chat(client)  # the first call waits for the snapshot; no budget covers it
            # Another process spends 0.001 USD on the project after this one's snapshot.
            other = Decimal("0.001")
            response = deployment.admin.post(
                "/v1/events",
                content=json.dumps(
                    [
                        {
                            "id": "elsewhere",
                            "timestamp": clock.to_iso(clock.now_ms()),
                            "provider": "openai",
                            "model_used": "gpt-5-mini",
                            "input_tokens": 4000,  # 0.001 USD at 0.25 USD per million
                            "output_tokens": 0,
                            "project": "phoenix",
                        }
                    ]
                ),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200
            sent, refused = _spend_concurrently(client, 30, project="phoenix")
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()

    assert 0 < sent < 30
    assert all(error.status_code == 402 for error in refused)
    events = [e for e in deployment.events(32) if e["project"] == "phoenix"]
    ours = _cost_of([e for e in events if e["id"] != "elsewhere"])
    assert ours == sent * CHAT_COST
    # The documented bound: the project's spend stays within the cap plus what other
    # processes spent during one refresh interval (here: the other process's 0.001 USD).
    assert _cost_of(events) <= cap + other


def _dead_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("mode", ["cached", "strict"])
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_with_the_policy_source_down_the_fail_mode_decides(standin, tmp_path, mode, fail_mode):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=provider,
        endpoint=_dead_endpoint(),
        api_key="p402_unused",
        providers=f"openai={standin.url('/v1')}",
        enforcement=mode,
        fail_mode=fail_mode,
        spool_dir=tmp_path,
    )
    try:
        with _openai(standin) as client, owner(department="legal"):
            if fail_mode == "open":
                reply = _chat(client)
                assert reply.choices[0].message.content == "Paris is the capital of France."
            else:
                with pytest.raises(openai.APIStatusError) as refused:
                    _chat(client)
                assert refused.value.status_code == 402
        instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    reason = str(attributes["p402.policy.reason"])
    assert "unreachable" in reason
    assert reason.endswith(f"fail_mode={fail_mode}")
    if fail_mode == "open":
        assert attributes["p402.policy.result"] == "allowed"
        assert len(standin.requests) == 1
    else:
        assert attributes["p402.policy.result"] == "blocked"
        assert standin.requests == []


def test_budgets_at_a_downgrade_cap_send_the_downgrade_model(deployment):
    deployment.configure(
        "/v1/budgets",
        {
            "scope": "department",
            "name": "legal",
            "cap_usd": "0.0001",  # below one gpt-5 call's bound, above a gpt-5-nano one
            "action_at_cap": "downgrade",
            "downgrade_model": "gpt-5-nano",
        },
    )
    instrumentor = deployment.instrument(enforcement="cached")
    try:
        with _openai(deployment.standin) as client, owner(department="legal"):
            client.chat.completions.create(
                model="gpt-5", messages=[{"role": "user", "content": "hi"}], max_tokens=20
            )
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()
    (request,) = deployment.standin.requests
    assert request.json()["model"] == "gpt-5-nano"
    (event,) = deployment.events(1)
    assert (event["policy_result"], event["model_original"]) == ("downgraded", "gpt-5")
    assert event["policy_reason"] == (
        "budget department=legal month at cap (action_at_cap=downgrade), downgrade_model=gpt-5-nano"
    )
