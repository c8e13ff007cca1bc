"""The ``cached`` decision, call by call: the instrumentation's own meter and enforcer against
the snapshot of a running P402 server (SQLite and PostgreSQL), with the process's own calls
counted over the snapshot's figures until their cost is known."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation._metering import Exchange, Meter
from p402.instrumentation._recorder import Recorder
from p402.instrumentation.config import P402Config
from p402.instrumentation.enforcement import Enforcer
from p402.instrumentation.owner import owner_values
from p402.instrumentation.policy_rules import cost_bound_picos
from p402.instrumentation.privacy import content_policy
from p402.instrumentation.vocabulary import PolicyResult
from p402.ledger.budgets import BudgetSpec, put_budgets
from p402.ledger.clock import now_ms
from p402.ledger.keys import Role, create_key
from p402.ledger.policies import PolicySpec, put_policies

PROVIDER_URL = "http://provider.invalid/v1"
LEGAL = {"department": "legal", "project": "phoenix"}


class _NoSink:
    """Events go nowhere: these tests look at the decisions."""

    def emit(self, *args: Any) -> None:
        pass

    def tick(self) -> None:
        pass

    def flush(self, timeout_millis: int) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _request(model: str = "gpt-5-mini", max_tokens: int = 300) -> httpx2.Request:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "model": model}
    body["max_completion_tokens"] = max_tokens
    return httpx2.Request(
        "POST",
        f"{PROVIDER_URL}/chat/completions",
        content=json.dumps(body, separators=(",", ":")).encode(),
        headers={"content-type": "application/json"},
    )


def _bound(model: str = "gpt-5-mini", asked: str | None = None) -> int:
    """The bound of a call asking for ``asked`` (default: ``model``) sent with ``model``."""
    size = len(_request(asked or model).content)
    bound = cost_bound_picos("openai", model, size, 300)
    assert bound is not None
    return bound


class Calls:
    """Calls through the real meter, decided by the real enforcer."""

    def __init__(self, server: BackgroundServer, ingest_key: str) -> None:
        config = P402Config.load(
            endpoint=server.url,
            api_key=ingest_key,
            providers=f"openai={PROVIDER_URL}",
            enforcement="cached",
        )
        self.enforcer = Enforcer(config)
        content = content_policy(config.privacy_mode, api_key=config.api_key)
        self.meter = Meter(config, _NoSink(), content, Recorder(), self.enforcer)

    def refresh(self) -> None:
        assert self.enforcer.refresh()

    def make(self, owners: dict[str, str], model: str = "gpt-5-mini") -> tuple[Exchange, Any]:
        request = _request(model)
        with owner_values(owners):
            exchange = self.meter.begin(request)
        assert exchange is not None
        return exchange, request


@pytest.fixture
def setup(engine) -> Iterator[tuple[Any, int, Calls]]:
    identity, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)

    def configure(budgets: list[dict[str, str]], policies: tuple[dict[str, str], ...] = ()) -> None:
        with engine.begin() as connection:
            specs = [BudgetSpec.from_json(item) for item in budgets]
            put_budgets(connection, identity.tenant_id, specs, now_ms())
            rules = [PolicySpec.from_json(item) for item in policies]
            put_policies(connection, identity.tenant_id, rules, now_ms())

    with BackgroundServer(create_app(engine, scheduler=False)) as server:
        calls = Calls(server, ingest_key)
        yield configure, identity.tenant_id, calls
        calls.enforcer.stop()


def test_calls_of_this_process_are_counted_against_a_cap_until_their_cost_is_known(setup):
    configure, _, calls = setup
    cap = 3 * _bound() + 1  # three calls' bounds fit, a fourth does not
    configure(
        [{"scope": "project", "name": "phoenix", "cap_usd": f"{cap}e-12", "action_at_cap": "block"}]
    )
    calls.refresh()
    allowed = [calls.make(LEGAL)[0] for _ in range(3)]
    assert all(e.refusal is None and e.reservation is not None for e in allowed)
    refused, _ = calls.make(LEGAL)
    assert refused.refusal is not None and refused.reservation is None
    assert refused.policy_result is PolicyResult.BLOCKED
    assert refused.policy_reason == "budget project=phoenix month at cap (action_at_cap=block)"
    # Another project's call is not covered: nothing is counted for it.
    other, _ = calls.make({"department": "sales", "project": "apollo"})
    assert other.refusal is None and other.reservation is None
    # One call's cost turns out to be nothing: its bound no longer counts, a new call fits.
    calls.enforcer.settle(allowed[0], None)
    again, _ = calls.make(LEGAL)
    assert again.refusal is None and again.reservation is not None


def test_the_tier_policy_and_every_cap_action_decide_as_the_rules_say(setup):
    configure, _, calls = setup
    configure(
        [
            {"scope": "department", "name": "legal", "cap_usd": "1000"},
            {
                "scope": "project",
                "name": "phoenix",
                "cap_usd": f"{2 * _bound('gpt-5') - 1}e-12",
                "action_at_cap": "downgrade",
                "downgrade_model": "gpt-5-mini",
            },
            {"scope": "employee", "name": "bob", "cap_usd": "0", "action_at_cap": "notify"},
        ],
        (
            {"department": "legal", "max_model": "gpt-5"},
            {"department": "research", "min_model": "gpt-5"},
        ),
    )
    calls.refresh()
    # Above the ceiling: sent as max_model, and its bound counted.
    above, request = calls.make(LEGAL, model="o3-pro")
    assert (above.policy_result, above.model_original) == (PolicyResult.DOWNGRADED, "o3-pro")
    assert json.loads(request.content)["model"] == "gpt-5"
    assert above.reservation is not None and above.reservation[1] == _bound("gpt-5", "o3-pro")
    # The second gpt-5 call passes the phoenix cap: the downgrade model is sent instead.
    second, request = calls.make(LEGAL, model="gpt-5")
    assert second.policy_result is PolicyResult.DOWNGRADED
    assert json.loads(request.content)["model"] == "gpt-5-mini"
    assert "action_at_cap=downgrade" in (second.policy_reason or "")
    # Below the floor: refused, nothing counted.
    below, _ = calls.make({"department": "research"}, model="gpt-5-mini")
    assert below.policy_result is PolicyResult.BLOCKED and below.reservation is None
    # A notify cap already reached lets the call through, flagged, and counts it.
    flagged, _ = calls.make({"department": "sales", "employee": "bob"})
    assert flagged.policy_result is PolicyResult.FLAGGED and flagged.refusal is None
    assert flagged.reservation is not None
    # A model of no known price is checked with no bound: only a cap already reached stops it.
    unpriced, _ = calls.make(LEGAL, model="in-house-llm")
    assert unpriced.refusal is None and unpriced.reservation is not None
    assert unpriced.reservation[1] == 0
