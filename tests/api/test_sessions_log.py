"""``GET /v1/sessions``: the session log, most costly sessions first, ranked from the
sessions' running totals, each with its events, tokens and latest receipt; paging, range and
owner filters, clear 400s and nothing of another tenant, on both databases."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from p402.ledger.clock import now_ms, to_iso
from p402.ledger.rollups import DAY_MS

NOW = now_ms()


def _event(event_id: str, days_ago: float, session: str | None, **values: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "timestamp": to_iso(int(NOW - days_ago * DAY_MS)),
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        "session": session,
        **values,
    }
    return {name: value for name, value in event.items() if value is not None}


HISTORY = [
    # s-long spans 20 days: it meets any range inside them
    _event("long-1", 20, "s-long", employee="ann", department="legal", input_tokens=50_000),
    _event("long-2", 1, "s-long", employee="ann", department="legal"),
    _event("big-1", 3, "s-big", employee="bob", department="sales", model_used="gpt-5"),
    _event("big-2", 3, "s-big", employee="bob", department="sales", output_tokens=9_000),
    _event("tie-a", 5, "s-tie-a", employee="cy", department="sales"),
    _event("tie-b", 5, "s-tie-b", employee="cy", department="sales"),
    _event("free", 2, "s-free", employee="dee", department="legal", model_used="house-model"),
    _event("old", 40, "s-old", employee="ann", department="legal", input_tokens=900_000),
    _event("none", 1, None, employee="ann", department="legal"),
]
GLOBEX = [_event("g-1", 1, "s-globex", employee="ann", input_tokens=10**7)]


@pytest.fixture
def acme(client, keys) -> dict[str, str]:
    for key, events in ((keys["ingest"], HISTORY), (keys["globex_ingest"], GLOBEX)):
        response = client.post(
            "/v1/events",
            content=json.dumps(events),
            headers={"x-p402-api-key": key, "content-type": "application/json"},
        )
        assert response.json()["inserted"] == len(events), response.text
    return {"x-p402-api-key": keys["read"]}


def _sessions(client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/v1/sessions", params=params, headers=headers)
    assert response.status_code == 200, (params, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def _from_events(client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each session's figures summed here from the event list."""
    sums: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"cost": Decimal(0), "events": 0, "input": 0, "output": 0, "unpriced": 0}
    )
    answer = client.get("/v1/events", params={"limit": 1000}, headers=headers).json()
    for event in answer["data"]:
        if event["session"] is None:
            continue
        figures = sums[event["session"]]
        figures["events"] += 1
        figures["input"] += event["input_tokens"]
        figures["output"] += event["output_tokens"]
        if event["cost_usd"] is None:
            figures["unpriced"] += 1
        else:
            figures["cost"] += Decimal(event["cost_usd"])
    return sums


def test_sessions_come_most_costly_first_with_the_whole_sessions_figures(client, acme):
    rows = _sessions(client, acme)["data"]
    expected = _from_events(client, acme)
    assert {row["session"] for row in rows} == set(expected)  # not globex's, not "no session"
    order = sorted(expected, key=lambda name: (-expected[name]["cost"], name))
    assert [row["session"] for row in rows] == order
    assert order[0] == "s-old"
    assert order.index("s-tie-a") + 1 == order.index("s-tie-b")  # equal costs by name
    for row in rows:
        figures = expected[row["session"]]
        assert Decimal(row["cost_usd"]) == figures["cost"]
        assert (row["events"], row["input_tokens"], row["output_tokens"]) == (
            figures["events"],
            figures["input"],
            figures["output"],
        )
        assert row["unpriced_events"] == figures["unpriced"]
        assert row["closed"] is False and row["receipt_id"] is row["receipt_status"] is None
    free = next(row for row in rows if row["session"] == "s-free")
    assert free["unpriced_events"] == 1 and free["events"] == 1  # unpriced is marked, not 0
    long = next(row for row in rows if row["session"] == "s-long")
    assert (long["employee"], long["department"], long["events"]) == ("ann", "legal", 2)
    assert long["first_event_at"] < long["last_event_at"]


def test_a_range_keeps_the_sessions_whose_span_meets_it(client, acme):
    within = {"from": to_iso(NOW - 10 * DAY_MS), "to": to_iso(NOW - 2.5 * DAY_MS)}
    names = [row["session"] for row in _sessions(client, acme, **within)["data"]]
    everything = [row["session"] for row in _sessions(client, acme)["data"]]
    meeting = {"s-long", "s-big", "s-tie-a", "s-tie-b"}  # s-long spans the range
    assert names == [name for name in everything if name in meeting]
    recent = [
        r["session"] for r in _sessions(client, acme, **{"from": to_iso(NOW - DAY_MS)})["data"]
    ]
    assert set(recent) == {"s-long"}


def test_owner_filters_narrow_the_log(client, acme):
    legal = _sessions(client, acme, department="legal")["data"]
    assert {row["session"] for row in legal} == {"s-old", "s-long", "s-free"}
    bob = _sessions(client, acme, employee="bob")["data"]
    assert [row["session"] for row in bob] == ["s-big"]


def test_cursors_page_through_every_session_exactly_once(client, acme):
    everything = [row["session"] for row in _sessions(client, acme)["data"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = _sessions(client, acme, **params)
        assert len(page["data"]) <= 2
        seen += [row["session"] for row in page["data"]]
        cursor = page["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert seen == everything and pages == 3


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, None),
        ({"limit": 1001}, None),
        ({"cursor": "not a cursor"}, "invalid_cursor"),
        ({"from": "yesterday"}, "invalid_parameter"),
    ],
)
def test_bad_parameters_answer_400_in_the_error_shape(client, acme, params, code):
    response = client.get("/v1/sessions", params=params, headers=acme)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_another_tenants_sessions_never_show(client, keys, acme):
    globex = {"x-p402-api-key": keys["globex_read"]}
    assert [row["session"] for row in _sessions(client, globex)["data"]] == ["s-globex"]
    assert client.get("/v1/sessions", headers={"x-p402-api-key": keys["ingest"]}).status_code == 403
