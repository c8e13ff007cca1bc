"""``GET /v1/spend/timeseries`` and ``GET /v1/drift`` over HTTP: shapes, sums, bad input,
roles and tenancy, on both databases."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from p402.ledger.clock import now_ms, to_iso
from p402.ledger.rollups import DAY_MS

TODAY = now_ms() // DAY_MS * DAY_MS


def _at(days_ago: float) -> str:
    return to_iso(int(TODAY - days_ago * DAY_MS))


def _event(event_id: str, days_ago: float, **values: object) -> dict[str, object]:
    return {
        "id": event_id,
        "timestamp": _at(days_ago),
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **values,
    }


HISTORY = [
    _event("a", 9.5, department="legal"),
    _event("b", 9.2, department="legal", model_used="gpt-5"),
    _event("c", 6.7, department="sales"),
    _event("d", 3.1, department="legal", model_used="gpt-5", outcome="accepted"),
    _event("e", 2.9, department="legal", model_used="gpt-5", outcome="rejected"),
    _event("f", 0.6, department="sales", workflow="review"),
]


@pytest.fixture
def history(client, keys):
    response = client.post(
        "/v1/events",
        content=json.dumps(HISTORY),
        headers={"x-p402-api-key": keys["ingest"], "content-type": "application/json"},
    )
    assert response.json()["inserted"] == len(HISTORY)
    # another tenant's events must not show
    client.post(
        "/v1/events",
        content=json.dumps([_event("g", 3.0, department="legal", input_tokens=10**6)]),
        headers={"x-p402-api-key": keys["globex_ingest"], "content-type": "application/json"},
    )
    return {"x-p402-api-key": keys["read"]}


def test_timeseries_buckets_add_up_to_get_spend(client, history):
    window = {"from": _at(10.25), "to": to_iso(now_ms())}
    spend = client.get("/v1/spend", params={**window, "group_by": "department"}, headers=history)
    for interval in ("hour", "day", "week", "month"):
        response = client.get(
            "/v1/spend/timeseries",
            params={**window, "interval": interval, "group_by": "department,model"},
            headers=history,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["interval"] == interval
        assert body["total"] == spend.json()["total"]
        assert sum(point["events"] for point in body["data"]) == 6
        assert sum(Decimal(point["cost_usd"]) for point in body["data"]) == Decimal(
            spend.json()["total"]["cost_usd"]
        )
        for row in spend.json()["data"]:
            in_department = [
                group
                for point in body["data"]
                for group in point["groups"]
                if group["department"] == row["department"]
            ]
            assert sum(Decimal(g["cost_usd"]) for g in in_department) == Decimal(row["cost_usd"])
            assert sum(g["events"] for g in in_department) == row["events"]


def test_daily_series_has_every_day_with_zeros_in_between(client, history):
    response = client.get(
        "/v1/spend/timeseries",
        params={"interval": "day", "from": _at(10), "to": _at(0)},
        headers=history,
    )
    points = response.json()["data"]
    assert [point["start"] for point in points] == [_at(d) for d in range(10, 0, -1)]
    assert [point["events"] for point in points] == [2, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    assert points[1] == {
        "start": _at(9),
        "end": _at(8),
        "cost_usd": "0",
        "events": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "unpriced_events": 0,
    }
    assert all(isinstance(point["cost_usd"], str) for point in points)


def test_timeseries_rejects_bad_parameters_in_the_error_shape(client, history):
    for params, fragment in [
        ({"interval": "fortnight"}, "interval"),
        ({"group_by": "planet"}, "unknown dimension(s) planet"),
        ({"from": "yesterday"}, "from:"),
        ({"interval": "hour", "from": _at(100), "to": _at(0)}, "more than 1000 buckets"),
        ({"from": _at(1), "to": _at(2)}, "from must be before to"),
    ]:
        response = client.get("/v1/spend/timeseries", params=params, headers=history)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert fragment in error["message"]


def test_drift_compares_the_windows_per_group(client, history):
    response = client.get(
        "/v1/drift",
        params={
            "baseline_from": _at(10),
            "baseline_to": _at(5),
            "from": _at(5),
            "to": _at(0),
            "group_by": "department",
        },
        headers=history,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["baseline"] == {"from": _at(10), "to": _at(5)}
    legal = next(row for row in body["data"] if row["department"] == "legal")
    assert legal["baseline"]["events"] == 2
    assert legal["current"]["events"] == 2
    assert legal["change"]["events"] == {"absolute": 0, "relative": "0"}
    mix = {row["model"]: row for row in legal["model_mix"]}
    assert mix["gpt-5"]["current_share"] == "1"
    assert mix["gpt-5-mini"]["current_share"] == "0"
    baseline_cost = Decimal(legal["baseline"]["cost_usd"])
    gpt5_before = Decimal(mix["gpt-5"]["baseline_cost_usd"])
    assert Decimal(mix["gpt-5"]["baseline_share"]) == round(gpt5_before / baseline_cost, 6)
    outcomes = {row["outcome"]: row["current_events"] for row in legal["outcomes"]}
    assert outcomes == {"accepted": 1, "rejected": 1}
    assert body["total"]["current"]["events"] == 3  # the other tenant's event does not count
    assert isinstance(body["total"]["change"]["cost_usd"]["absolute"], str)


def test_drift_pages_its_groups_with_the_same_total(client, history):
    params = {
        "baseline_from": _at(10),
        "baseline_to": _at(5),
        "from": _at(5),
        "to": _at(0),
        "group_by": "department,workflow,model",
    }
    whole = client.get("/v1/drift", params=params, headers=history).json()
    assert len(whole["data"]) >= 4 and whole["next_cursor"] is None
    pages, cursor = [], None
    while True:
        paged = {**params, "limit": 1} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/drift", params=paged, headers=history).json()
        assert len(body["data"]) == 1 and body["total"] == whole["total"]
        pages.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == whole["data"]  # every group once, in the same order
    bad = client.get("/v1/drift", params={**params, "cursor": "bm90IGEgY3Vyc29y"}, headers=history)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
    too_many = client.get("/v1/drift", params={**params, "limit": 1001}, headers=history)
    assert too_many.status_code == 400


def test_drift_refuses_invalid_windows(client, history):
    complete = {"baseline_from": _at(10), "baseline_to": _at(5), "from": _at(5), "to": _at(0)}
    cases = [
        ({k: v for k, v in complete.items() if k != "baseline_from"}, "baseline window needs"),
        ({k: v for k, v in complete.items() if k != "to"}, "current (from, to)"),
        ({**complete, "baseline_to": "soon"}, "baseline_to:"),
        ({**complete, "baseline_to": _at(11)}, "baseline window must begin before it ends"),
        ({**complete, "from": _at(0)}, "current window must begin before it ends"),
    ]
    for params, fragment in cases:
        response = client.get("/v1/drift", params=params, headers=history)
        assert response.status_code == 400, params
        assert fragment in response.json()["error"]["message"]


def test_spend_over_time_needs_a_read_key_and_shows_only_the_tenant(client, keys, history):
    for path in ("/v1/spend/timeseries", "/v1/drift"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"x-p402-api-key": keys["ingest"]}).status_code == 403
    other = client.get(
        "/v1/spend/timeseries",
        params={"from": _at(10), "to": _at(0)},
        headers={"x-p402-api-key": keys["globex_read"]},
    ).json()
    assert other["total"]["events"] == 1
    assert other["total"]["input_tokens"] == 10**6
    admin = client.get("/v1/spend/timeseries", headers={"x-p402-api-key": keys["admin"]})
    assert admin.status_code == 200
