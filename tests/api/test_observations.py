"""Routing observations: measured cost and outcome quality per task type and model tier; the
recommendation stays blocked until both tiers have a quality baseline."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from p402.api import create_app
from p402.api.scheduler import Scheduler
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import Role, create_key
from p402.ledger.observations import MIN_SCORED_OUTCOMES
from p402.ledger.policies import put_tier_overrides

NOW = 1_800_000_000_000
MICRO = 1_000_000  # picodollars
ECONOMY, PREMIUM = "gpt-5-mini", "claude-opus-4-5"


@pytest.fixture
def api(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, scheduler=False)) as client:
        yield client


def _calls(
    engine, tenant_id: int, prefix: str, model: str, count: int, cost: int, **owners: str
) -> list[str]:
    ids = [f"{prefix}-{index}" for index in range(count)]
    insert_events(
        engine,
        tenant_id,
        [
            EventRecord(
                event_id=event_id,
                ts_ms=NOW - 3_600_000 - index * 60_000,
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                model_used=model,
                cost_picos=cost,
                **owners,
            )  # type: ignore[arg-type]
            for index, event_id in enumerate(ids)
        ],
    )
    return ids


def _report(api, key: str, outcomes: list[dict[str, object]]) -> None:
    response = api.post(
        "/v1/outcomes",
        content=json.dumps(outcomes),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def _scored(ids: list[str], qualities: list[float], accepted: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": event_id,
            "outcome": "accepted" if index < accepted else "rejected",
            "quality_score": quality,
        }
        for index, (event_id, quality) in enumerate(zip(ids, qualities, strict=False))
    ]


def _observe(engine) -> None:
    scheduler = Scheduler(engine, clock=lambda: NOW, environ={})
    assert scheduler.run_once("observations").ran
    scheduler.shutdown()  # gives the lease up for the next one


def _observations(api, key: str, **params: str) -> dict[str, dict]:
    response = api.get("/v1/observations", params=params, headers={"x-p402-api-key": key})
    assert response.status_code == 200, response.text
    return {item["task_type"]: item for item in response.json()["data"]}


def test_without_a_quality_baseline_on_both_tiers_the_recommendation_is_blocked(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    cheap = _calls(engine, tenant_id, "cheap", ECONOMY, 40, MICRO, task_type="contracts")
    dear = _calls(engine, tenant_id, "dear", PREMIUM, 20, 20 * MICRO, task_type="contracts")
    _report(api, keys["ingest"], _scored(cheap, [0.8, 0.9] * 20, accepted=36))
    _report(api, keys["ingest"], _scored(dear, [0.9] * 10, accepted=10))
    _observe(engine)

    observation = _observations(api, keys["read"])["contracts"]
    economy, premium = observation["tiers"]
    assert economy == {
        "tier": "economy",
        "models": {ECONOMY: 40},
        "events": 40,
        "priced_events": 40,
        "cost_usd": "0.00004",
        "mean_cost_usd": "0.000001",
        "outcomes": 40,
        "accepted": 36,
        "acceptance_rate": 0.9,
        "scored_outcomes": 40,
        "mean_quality": 0.85,
    }
    assert (premium["tier"], premium["events"], premium["scored_outcomes"]) == ("premium", 20, 10)
    assert premium["mean_cost_usd"] == "0.00002"
    assert premium["mean_quality"] == 0.9
    assert observation["recommendation"]["status"] == "blocked"
    reason = observation["recommendation"]["reason"]
    assert f"at least {MIN_SCORED_OUTCOMES} scored outcomes" in reason
    assert "economy has 40, premium has 10" in reason
    assert observation["economy_matches_premium"] is None


def test_with_a_baseline_the_observation_says_whether_economy_matches_premium(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    for task, economy_quality in (("contracts", 0.86), ("drafting", 0.6)):
        cheap = _calls(engine, tenant_id, f"{task}-cheap", ECONOMY, 30, MICRO, task_type=task)
        dear = _calls(engine, tenant_id, f"{task}-dear", PREMIUM, 30, 20 * MICRO, task_type=task)
        _report(api, keys["ingest"], _scored(cheap, [economy_quality] * 30, accepted=27))
        _report(api, keys["ingest"], _scored(dear, [0.9] * 30, accepted=28))
    _observe(engine)

    seen = _observations(api, keys["read"])
    matched = seen["contracts"]
    assert matched["economy_matches_premium"] is True
    assert (matched["economy_mean_quality"], matched["premium_mean_quality"]) == (0.86, 0.9)
    assert matched["recommendation"]["status"] == "economy_matches_premium"
    reason = matched["recommendation"]["reason"]
    assert "economy mean quality 0.86" in reason and "premium 0.9" in reason
    assert "economy 0.000001 USD, premium 0.00002 USD" in reason
    assert "%" not in json.dumps(seen)  # measured figures only, never a promised saving

    below = seen["drafting"]
    assert below["economy_matches_premium"] is False
    assert below["recommendation"]["status"] == "keep_premium"
    assert "0.6" in below["recommendation"]["reason"]

    only = _observations(api, keys["read"], task_type="drafting")
    assert list(only) == ["drafting"]
    first = api.get("/v1/observations?limit=1", headers={"x-p402-api-key": keys["read"]}).json()
    assert [item["task_type"] for item in first["data"]] == ["contracts"]
    rest = api.get(
        f"/v1/observations?limit=1&cursor={first['next_cursor']}",
        headers={"x-p402-api-key": keys["read"]},
    ).json()
    assert [item["task_type"] for item in rest["data"]] == ["drafting"]
    assert rest["next_cursor"] is None


def test_session_outcomes_count_for_a_tier_only_when_the_session_used_one(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    _calls(engine, tenant_id, "one", ECONOMY, 3, MICRO, session="s-one", task_type="summaries")
    _calls(engine, tenant_id, "mixed-a", ECONOMY, 2, MICRO, session="s-mixed")
    _calls(engine, tenant_id, "mixed-b", PREMIUM, 1, MICRO, session="s-mixed")
    _report(
        api,
        keys["ingest"],
        [
            {"session": "s-one", "outcome": "accepted", "quality_score": 0.7},
            {
                "session": "s-mixed",
                "outcome": "accepted",
                "quality_score": 1,
                "task_type": "summaries",
            },
        ],
    )
    _observe(engine)
    tiers = {tier["tier"]: tier for tier in _observations(api, keys["read"])["summaries"]["tiers"]}
    # s-mixed's events take its outcome's task type, but its outcome counts for neither tier.
    assert (tiers["economy"]["events"], tiers["premium"]["events"]) == (5, 1)
    assert (tiers["economy"]["outcomes"], tiers["economy"]["mean_quality"]) == (1, 0.7)
    assert tiers["premium"]["outcomes"] == 0


def test_outcomes_sent_with_the_events_count_unscored_unless_one_was_reported(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    outcomes = ["accepted", "accepted", "rejected", "accepted"]
    for index, outcome in enumerate(outcomes):  # stored as POST /v1/events stores them
        _calls(
            engine,
            tenant_id,
            f"sent-{index}",
            ECONOMY,
            1,
            MICRO,
            task_type="triage",
            outcome=outcome,
        )
    # A report replaces what the event arrived with (rejected): it counts once, scored.
    _report(api, keys["ingest"], _scored(["sent-2-0"], [0.5], accepted=1))  # accepted
    # An event whose session has a reported outcome: that outcome counts, per session.
    _calls(engine, tenant_id, "in-s", ECONOMY, 2, MICRO, session="s-done", task_type="triage")
    _report(api, keys["ingest"], [{"session": "s-done", "outcome": "rejected"}])
    _observe(engine)
    (economy,) = _observations(api, keys["read"])["triage"]["tiers"]
    # 4 events' outcomes (all accepted now) and the session's (rejected)
    assert (economy["events"], economy["outcomes"], economy["accepted"]) == (6, 5, 4)
    assert (economy["scored_outcomes"], economy["mean_quality"]) == (1, 0.5)


def test_observations_are_per_tenant_and_need_a_read_key(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    _calls(engine, tenant_id, "cheap", ECONOMY, 2, MICRO, task_type="contracts")
    _observe(engine)
    assert list(_observations(api, keys["read"])) == ["contracts"]
    assert _observations(api, keys["globex_read"]) == {}
    ingest = api.get("/v1/observations", headers={"x-p402-api-key": keys["ingest"]})
    assert ingest.status_code == 403
    assert api.get("/v1/observations").status_code == 401


def test_the_tenants_tier_overrides_decide_a_models_tier(engine, api, keys):
    tenant_id = create_key(engine, tenant="acme", role=Role.READ)[0].tenant_id
    _calls(engine, tenant_id, "house", "in-house-llm", 2, MICRO, task_type="contracts")
    _calls(engine, tenant_id, "cheap", ECONOMY, 1, MICRO, task_type="contracts")
    _observe(engine)
    tiers = [t["tier"] for t in _observations(api, keys["read"])["contracts"]["tiers"]]
    assert tiers == ["economy", "unclassified"]

    with engine.begin() as connection:
        put_tier_overrides(connection, tenant_id, {"in-house-llm": "premium"})
    _observe(engine)
    (economy, premium) = _observations(api, keys["read"])["contracts"]["tiers"]
    assert (premium["tier"], premium["models"]) == ("premium", {"in-house-llm": 2})
    assert economy["models"] == {ECONOMY: 1}
