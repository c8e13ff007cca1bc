"""Budgets, projections, policies, the policy snapshot and authorisations over HTTP: shapes,
figures, roles, tenancy and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from litestar.testing import TestClient

from p402.api import create_app
from p402.api.scheduler import SettingsError
from p402.ledger import clock

NOW = clock.from_iso("2026-11-11T00:00:00Z")  # a third of November has elapsed


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    """The API's "now" (the period and the projection depend on it)."""
    monkeypatch.setattr(clock, "now_ms", lambda: NOW)


def _headers(key: str) -> dict[str, str]:
    return {"x-p402-api-key": key, "content-type": "application/json"}


def _put(client, key: str, path: str, body: object):
    return client.put(path, content=json.dumps(body), headers=_headers(key))


def _spend(client, key: str, event_id: str, usd: str | int, at: str, **owners: str) -> None:
    """A meter-only event costing ``usd`` (gpt-5-mini input is 0.25 USD per million)."""
    event = {
        "id": event_id,
        "timestamp": at,
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": int(Decimal(usd) * 4_000_000),
        "output_tokens": 0,
        **owners,
    }
    response = client.post("/v1/events", content=json.dumps([event]), headers=_headers(key))
    assert response.status_code == 200, response.text


def test_budgets_are_written_and_read_with_their_figures(client, keys):
    _spend(client, keys["ingest"], "a", 3, "2026-11-02T10:00:00Z", department="legal")
    _spend(client, keys["ingest"], "b", 1, "2026-11-10T10:00:00Z", department="sales")
    _spend(client, keys["ingest"], "c", 5, "2026-10-30T10:00:00Z", department="legal")
    written = _put(
        client,
        keys["admin"],
        "/v1/budgets",
        [
            {"scope": "department", "name": "legal", "cap_usd": "10", "action_at_cap": "block"},
            {"scope": "organization", "cap_usd": "4.5"},
        ],
    )
    assert written.status_code == 200, written.text
    assert [b["scope"] for b in written.json()["data"]] == ["department", "organization"]

    listed = client.get("/v1/budgets", headers=_headers(keys["read"])).json()
    assert listed["next_cursor"] is None
    legal, organization = listed["data"]
    assert legal == {
        "id": legal["id"],
        "scope": "department",
        "name": "legal",
        "period": "month",
        "cap_usd": "10",
        "action_at_cap": "block",
        "downgrade_model": None,
        "spent_usd": "3",
        "held_usd": "0",
        "remaining_usd": "7",
        "consumed_pct": 30.0,
        "projected_usd": "9",
        "status": "ok",
        "period_start": "2026-11-01T00:00:00.000Z",
        "period_end": "2026-12-01T00:00:00.000Z",
    }
    assert (organization["spent_usd"], organization["consumed_pct"]) == ("4", 88.88)
    assert (organization["projected_usd"], organization["status"]) == ("12", "warning")
    assert organization["action_at_cap"] == "notify"

    # The same scope, name and period again replaces the budget.
    _put(client, keys["admin"], "/v1/budgets", {"scope": "organization", "cap_usd": "100"})
    again = client.get("/v1/budgets", headers=_headers(keys["read"])).json()["data"]
    assert [b["cap_usd"] for b in again] == ["10", "100"]
    assert again[1]["status"] == "ok"


def test_budget_lists_page_with_a_cursor(client, keys):
    for name in ("a", "b", "c"):
        _put(
            client, keys["admin"], "/v1/budgets", {"scope": "project", "name": name, "cap_usd": "1"}
        )
    first = client.get("/v1/budgets?limit=2", headers=_headers(keys["read"])).json()
    assert [b["name"] for b in first["data"]] == ["a", "b"]
    rest = client.get(
        f"/v1/budgets?limit=2&cursor={first['next_cursor']}", headers=_headers(keys["read"])
    ).json()
    assert ([b["name"] for b in rest["data"]], rest["next_cursor"]) == (["c"], None)
    bad = client.get("/v1/budgets?cursor=zzz", headers=_headers(keys["read"]))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_cursor"


def test_projections_show_velocity_projection_and_overage(client, keys):
    _spend(client, keys["ingest"], "a", 4, "2026-11-03T10:00:00Z", project="phoenix")
    _spend(client, keys["ingest"], "b", 1, "2026-11-10T10:00:00Z", project="atlas")
    _put(
        client,
        keys["admin"],
        "/v1/budgets",
        [
            {"scope": "project", "name": "phoenix", "cap_usd": "10"},
            {"scope": "project", "name": "atlas", "cap_usd": "10"},
        ],
    )
    phoenix, atlas = client.get("/v1/projections", headers=_headers(keys["read"])).json()["data"]
    # 4 USD in 10 of November's 30 days: 0.4 USD a day, 12 USD by the end of the month.
    assert phoenix == {
        "budget_id": phoenix["budget_id"],
        "scope": "project",
        "name": "phoenix",
        "period": "month",
        "period_start": "2026-11-01T00:00:00.000Z",
        "period_end": "2026-12-01T00:00:00.000Z",
        "spent_usd": "4",
        "velocity_usd_per_day": "0.4",
        "projected_usd": "12",
        "cap_usd": "10",
        "overage_usd": "2",
        "projected_over": True,
    }
    assert (atlas["projected_usd"], atlas["overage_usd"], atlas["projected_over"]) == (
        "3",
        None,
        False,
    )
    budgets = client.get("/v1/budgets", headers=_headers(keys["read"])).json()["data"]
    assert budgets[0]["status"] == "projected_over"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"scope": "department", "cap_usd": "1"}, "name"),
        ({"scope": "organization", "cap_usd": 2.5e0}, None),  # a JSON number is exact: fine
        ({"scope": "organization", "cap_usd": "abc"}, "cap_usd"),
        ([{"scope": "organization", "cap_usd": "1"}, {"scope": "x", "cap_usd": "1"}], "budget 2"),
    ],
)
def test_invalid_budgets_answer_400_and_write_nothing(client, keys, body, message):
    response = _put(client, keys["admin"], "/v1/budgets", body)
    if message is None:
        assert response.status_code == 200
        assert response.json()["data"][0]["cap_usd"] == "2.5"
        return
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_budget"
    assert message in response.json()["error"]["message"]
    assert client.get("/v1/budgets", headers=_headers(keys["read"])).json()["data"] == []


def test_roles_and_tenants(client, keys):
    body = {"scope": "organization", "cap_usd": "1"}
    assert _put(client, keys["read"], "/v1/budgets", body).status_code == 403
    assert _put(client, keys["ingest"], "/v1/policies", {"department": "x"}).status_code == 403
    assert client.get("/v1/budgets", headers=_headers(keys["ingest"])).status_code == 403
    assert client.get("/v1/projections").status_code == 401
    assert client.get("/v1/policy", headers=_headers(keys["read"])).status_code == 403
    authorize = {"event_id": "e", "model": "gpt-5", "max_cost_usd": "1"}
    response = client.post(
        "/v1/authorize", content=json.dumps(authorize), headers=_headers(keys["read"])
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"

    assert _put(client, keys["admin"], "/v1/budgets", body).status_code == 200
    assert _put(client, keys["admin"], "/v1/policies", {"department": "legal"}).status_code == 200
    # Another tenant sees none of it.
    assert client.get("/v1/budgets", headers=_headers(keys["globex_read"])).json()["data"] == []
    assert client.get("/v1/policies", headers=_headers(keys["globex_read"])).json()["data"] == []
    snapshot = client.get("/v1/policy", headers=_headers(keys["globex_ingest"])).json()
    assert (snapshot["budgets"], snapshot["policies"]) == ([], [])


def test_policies_and_tier_overrides(client, keys):
    response = _put(
        client,
        keys["admin"],
        "/v1/policies",
        [
            {
                "department": "legal",
                "min_model": "claude-sonnet-4-5",
                "routing": "compliance-aware",
            },
            {"department": "marketing", "max_model": "gpt-5-mini", "routing": "cost-first"},
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {
            "department": "legal",
            "min_model": "claude-sonnet-4-5",
            "max_model": None,
            "min_tier": "standard",
            "max_tier": None,
            "routing": "compliance-aware",
        },
        {
            "department": "marketing",
            "min_model": None,
            "max_model": "gpt-5-mini",
            "min_tier": None,
            "max_tier": "economy",
            "routing": "cost-first",
        },
    ]
    unknown = _put(
        client, keys["admin"], "/v1/policies", {"department": "x", "max_model": "my-llm"}
    )
    assert unknown.status_code == 400
    assert "no known tier" in unknown.json()["error"]["message"]
    tiers = _put(
        client,
        keys["admin"],
        "/v1/settings",
        {"model_tiers": {"my-llm": "premium", "gpt-5-mini": "standard"}},
    )
    assert tiers.status_code == 200, tiers.text
    with_tier = _put(
        client, keys["admin"], "/v1/policies", {"department": "x", "max_model": "my-llm"}
    )
    assert with_tier.status_code == 200, with_tier.text
    listed = client.get("/v1/policies", headers=_headers(keys["read"])).json()
    assert listed["tier_overrides"] == {"gpt-5-mini": "standard", "my-llm": "premium"}
    assert [p["max_tier"] for p in listed["data"]] == [None, "standard", "premium"]
    inverted = _put(
        client,
        keys["admin"],
        "/v1/policies",
        {"department": "y", "min_model": "o3-pro", "max_model": "gpt-4o-mini"},
    )
    assert inverted.status_code == 400
    assert "above" in inverted.json()["error"]["message"]
    bad_routing = _put(client, keys["admin"], "/v1/policies", {"department": "y", "routing": "x"})
    assert bad_routing.json()["error"]["code"] == "invalid_policy"


def test_the_policy_snapshot_has_a_version_and_answers_304_when_unchanged(client, keys):
    _put(client, keys["admin"], "/v1/policies", {"department": "legal", "max_model": "gpt-5"})
    _put(
        client,
        keys["admin"],
        "/v1/budgets",
        {"scope": "department", "name": "legal", "cap_usd": "2", "action_at_cap": "block"},
    )
    _spend(client, keys["ingest"], "a", 1, "2026-11-05T00:00:00Z", department="legal")
    response = client.get("/v1/policy", headers=_headers(keys["ingest"]))
    assert response.status_code == 200
    snapshot = response.json()
    assert response.headers["etag"] == f'"{snapshot["version"]}"'
    assert snapshot["refresh_seconds"] == 10
    assert snapshot["policies"][0]["max_tier"] == "standard"
    assert snapshot["budgets"] == [
        {
            "scope": "department",
            "name": "legal",
            "period": "month",
            "cap_usd": "2",
            "spent_usd": "1",
            "held_usd": "0",
            "remaining_usd": "1",
            "action_at_cap": "block",
            "downgrade_model": None,
            "status": "projected_over",  # 1 USD in a third of the month: 3 by its end
            "period_end": "2026-12-01T00:00:00.000Z",
        }
    ]
    unchanged = client.get(
        "/v1/policy",
        headers={**_headers(keys["ingest"]), "if-none-match": response.headers["etag"]},
    )
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    _spend(client, keys["ingest"], "b", 1, "2026-11-05T00:00:00Z", department="legal")
    changed = client.get(
        "/v1/policy",
        headers={**_headers(keys["ingest"]), "if-none-match": response.headers["etag"]},
    )
    assert changed.status_code == 200
    assert changed.json()["budgets"][0]["remaining_usd"] == "0"


@pytest.fixture
def refreshing_client(engine, monkeypatch) -> Iterator[TestClient]:
    """A server started with ``P402_POLICY_REFRESH_SECONDS=3``."""
    monkeypatch.setenv("P402_POLICY_REFRESH_SECONDS", "3")
    with TestClient(create_app(engine)) as test_client:
        yield test_client


def test_authorize_decides_holds_and_releases_at_ingest(refreshing_client, keys):
    client = refreshing_client
    _put(
        client,
        keys["admin"],
        "/v1/budgets",
        {"scope": "project", "name": "phoenix", "cap_usd": "1", "action_at_cap": "block"},
    )
    _put(client, keys["admin"], "/v1/policies", {"department": "legal", "max_model": "gpt-5"})

    def ask(event_id: str, model: str = "gpt-5-mini", cost: str = "0.6"):
        body = {
            "event_id": event_id,
            "provider": "openai",
            "model": model,
            "owner": {"department": "legal", "project": "phoenix"},
            "max_cost_usd": cost,
        }
        response = client.post(
            "/v1/authorize", content=json.dumps(body), headers=_headers(keys["ingest"])
        )
        assert response.status_code == 200, response.text
        return response.json()

    first = ask("e1")
    assert first == {
        "event_id": "e1",
        "decision": "allow",
        "policy_result": "allowed",
        "model": "gpt-5-mini",
        "reason": None,
        "hold_usd": "0.6",
        "expires_at": clock.to_iso(NOW + 600_000),
    }
    second = ask("e2")
    assert (second["decision"], second["hold_usd"]) == ("block", None)
    assert second["reason"] == "budget project=phoenix month at cap (action_at_cap=block)"
    downgraded = ask("e3", model="o3-pro", cost="0.1")
    assert (downgraded["decision"], downgraded["model"]) == ("downgrade", "gpt-5")
    assert downgraded["reason"] == "dept_policy=quality-first, max_tier=standard"
    snapshot = client.get("/v1/policy", headers=_headers(keys["ingest"])).json()
    assert snapshot["refresh_seconds"] == 3
    assert snapshot["budgets"][0]["held_usd"] == "0.7"

    # The event of e1 arrives (it cost 0.25 USD): its hold goes, its cost counts.
    _spend(client, keys["ingest"], "e1", "0.25", "2026-11-10T00:00:00Z", project="phoenix")
    _spend(client, keys["ingest"], "other", 1, "2026-11-10T00:00:00Z")  # not phoenix's
    budget = client.get("/v1/budgets", headers=_headers(keys["read"])).json()["data"][0]
    assert (budget["spent_usd"], budget["held_usd"]) == ("0.25", "0.1")
    assert ask("e4")["decision"] == "allow"  # 0.25 + 0.1 + 0.6 <= 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "gpt-5", "max_cost_usd": "1"}, "event_id"),
        ({"event_id": "e", "max_cost_usd": "1"}, "model"),
        ({"event_id": "e", "model": "gpt-5"}, "bound"),
        ({"event_id": "e", "model": "gpt-5", "max_cost_usd": 0.5}, None),
        ({"event_id": "e", "model": "gpt-5", "max_cost_usd": "-1"}, "negative"),
        ({"event_id": "e", "model": "gpt-5", "max_output_tokens": -1}, "max_output_tokens"),
        ({"event_id": "e", "model": "gpt-5", "max_cost_usd": "1", "owner": {"x": "y"}}, "owner"),
        ({"event_id": "e", "model": "gpt-5", "max_cost_usd": "1", "extra": 1}, "unknown"),
        ({"event_id": "e", "model": "gpt-5", "max_cost_usd": "1000000.000000000001"}, "at most"),
        ({"event_id": "e", "model": "gpt-5", "max_output_tokens": 2**31}, "up to"),
        (
            {
                "event_id": "e",
                "model": "gpt-5",
                "max_cost_usd": "1",
                "owner": {"project": "p" * 201},
            },
            "200 characters",
        ),
    ],
)
def test_invalid_authorizations_answer_400(client, keys, body, message):
    response = client.post(
        "/v1/authorize", content=json.dumps(body), headers=_headers(keys["ingest"])
    )
    if message is None:
        assert response.status_code == 200  # a JSON number is read as an exact decimal
        return
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_authorization"
    assert message in response.json()["error"]["message"]


def test_policies_page_with_a_cursor_and_every_page_has_the_tier_overrides(client, keys):
    policies = [{"department": name, "max_model": "gpt-5"} for name in ("c", "a", "b")]
    assert _put(client, keys["admin"], "/v1/policies", policies).status_code == 200
    first = client.get("/v1/policies?limit=2", headers=_headers(keys["read"])).json()
    assert [p["department"] for p in first["data"]] == ["a", "b"]
    rest = client.get(
        f"/v1/policies?limit=2&cursor={first['next_cursor']}", headers=_headers(keys["read"])
    ).json()
    assert ([p["department"] for p in rest["data"]], rest["next_cursor"]) == (["c"], None)
    assert "tier_overrides" in first and rest["tier_overrides"] == first["tier_overrides"]
    everything = client.get("/v1/policies", headers=_headers(keys["read"])).json()
    assert [p["department"] for p in everything["data"]] == ["a", "b", "c"]
    bad = client.get("/v1/policies?cursor=zzz", headers=_headers(keys["read"]))
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("value", ["0", "-5", "abc", "2.5", "3601", "\u0663"])
def test_a_policy_refresh_that_is_not_whole_seconds_within_an_hour_stops_the_server(
    engine, monkeypatch, value
):
    monkeypatch.setenv("P402_POLICY_REFRESH_SECONDS", value)
    with pytest.raises(SettingsError) as raised:
        create_app(engine, scheduler=False)
    assert str(raised.value) == (
        "P402_POLICY_REFRESH_SECONDS must be a whole number of seconds from 1 to 3,600, "
        f"not {value!r}"
    )


def test_the_snapshot_gives_the_refresh_the_server_started_with(engine, keys, monkeypatch):
    monkeypatch.setenv("P402_POLICY_REFRESH_SECONDS", "3600")
    app = create_app(engine, scheduler=False)
    monkeypatch.setenv("P402_POLICY_REFRESH_SECONDS", "banana")  # read once, at start
    with TestClient(app) as client:
        snapshot = client.get("/v1/policy", headers=_headers(keys["ingest"])).json()
    assert snapshot["refresh_seconds"] == 3600
