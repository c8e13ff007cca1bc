"""``GET /v1/spend`` a page at a time: the most costly groups first (equal costs in the byte
order of their values), ``limit`` and ``cursor`` paging through every group exactly once, a
``total`` that covers every group whatever the page, clear 400s and nothing of another tenant,
on both databases."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from p402.instrumentation.money import usd_str
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.rollups import DAY_MS, HOUR_MS

TODAY = now_ms() // DAY_MS * DAY_MS
MEASURES = ("cost_usd", "events", "input_tokens", "output_tokens", "unpriced_events")


def _at(days_ago: float) -> str:
    return to_iso(int(TODAY - days_ago * DAY_MS))


def _event(event_id: str, days_ago: float, **values: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "timestamp": _at(days_ago),
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **values,
    }
    return {name: value for name, value in event.items() if value is not None}


# Five groups of employees tie (one identical event each); the rest differ in cost.
TIED = (None, "ann", "Bob", "zoe", "\N{LATIN CAPITAL LETTER E WITH ACUTE}mile")
HISTORY = [
    *(
        _event(f"tie-{n}", 1.5 + n, employee=name, department="legal", session=f"s-tie-{n}")
        for n, name in enumerate(TIED)
    ),
    _event("big-1", 9.25, employee="carol", department="legal", input_tokens=90_000),
    _event("big-2", 0.4, employee="carol", department="sales", input_tokens=40_000),
    _event("mid-1", 3.6, employee="dave", department="sales", model_used="gpt-5"),
    _event("mid-2", 2.1, employee="dave", department="sales", session="s-dave"),
    _event("mid-3", 0.2, employee="erin", department=None, output_tokens=5_000),
    _event("free-1", 4.3, employee="frank", department="legal", model_used="house-model-x"),
    _event("free-2", 0.1, employee="frank", model_used="house-model-x", session="s-frank"),
    *(
        _event(
            f"many-{n}",
            n * 0.7,
            employee=f"emp-{n:02d}",
            department=f"dept-{n % 4}",
            input_tokens=1000 + 37 * (n + 1),
        )
        for n in range(14)
    ),
]
GLOBEX = [
    _event("g-1", 1.0, employee="ann", department="legal", input_tokens=10**6),
    _event("g-2", 2.0, employee="globex-only", department="globex-dept", input_tokens=10**6),
]
GROUPINGS = ("employee", "department,employee", "session", "model,department")
# a range that starts and ends inside a day: rollup days, hours and events, added and taken out
RANGES: tuple[dict[str, str], ...] = (
    {},
    {"from": to_iso(TODAY - 6 * DAY_MS - 5 * HOUR_MS - 7), "to": to_iso(TODAY - HOUR_MS + 11)},
)


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


def _get(client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/v1/spend", params=params, headers=headers)
    assert response.status_code == 200, (params, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def _expected(client, headers: dict[str, str], names: list[str], **filters: str):
    """The groups and total, summed here from the event list (each event's own cost), most
    costly first and equal costs in the code-point order of their values (missing first)."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 1000, **filters, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/events", params=params, headers=headers).json()
        events += page["data"]
        if not (cursor := page["next_cursor"]):
            break
    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"cost": Decimal(0), "events": 0, "input": 0, "output": 0, "unpriced": 0}
    )
    column = {"model": "model_used"}
    for event in events:
        key = tuple(event[column.get(name, name)] or None for name in names)
        for group in (groups[key], groups[("total",)]):
            group["cost"] += Decimal(event["cost_usd"] or 0)
            group["events"] += 1
            group["input"] += event["input_tokens"] or 0
            group["output"] += event["output_tokens"] or 0
            group["unpriced"] += event["cost_usd"] is None

    def shown(figures: dict[str, Any]) -> dict[str, Any]:
        return {
            "cost_usd": usd_str(figures["cost"]),
            "events": figures["events"],
            "input_tokens": figures["input"],
            "output_tokens": figures["output"],
            "unpriced_events": figures["unpriced"],
        }

    total = shown(groups.pop(("total",)))
    order = sorted(
        groups.items(), key=lambda item: (-item[1]["cost"], [value or "" for value in item[0]])
    )
    rows = [{**dict(zip(names, key, strict=True)), **shown(figures)} for key, figures in order]
    return rows, total


def _walk(client, headers: dict[str, str], limit: int, **params: Any):
    """Every page of a question, following ``next_cursor``."""
    pages = [_get(client, headers, limit=limit, **params)]
    while pages[-1]["next_cursor"]:
        pages.append(_get(client, headers, limit=limit, cursor=pages[-1]["next_cursor"], **params))
    return pages


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_groups_come_most_costly_first_with_ties_in_the_order_of_their_values(
    client, acme, group_by
):
    names = group_by.split(",")
    for filters in RANGES:
        rows, total = _expected(client, acme, names, **filters)
        answer = _get(client, acme, group_by=group_by, **filters)
        assert answer["data"] == rows
        assert answer["total"] == total
        assert answer["next_cursor"] is None  # fewer groups than the default limit of 100
        assert len(rows) > 5
        for row in answer["data"]:
            assert list(row) == [*names, *MEASURES]


def test_ties_are_ordered_by_their_values_in_byte_order(client, acme):
    answer = _get(client, acme, group_by="employee")
    tied_cost = next(row["cost_usd"] for row in answer["data"] if row["employee"] == "ann")
    tied = [row["employee"] for row in answer["data"] if row["cost_usd"] == tied_cost]
    assert tied == [None, "Bob", "ann", "zoe", "\N{LATIN CAPITAL LETTER E WITH ACUTE}mile"]
    assert answer["data"][0]["employee"] == "carol"
    assert answer["data"][-1]["employee"] == "frank"  # unpriced events only: no cost
    assert answer["data"][-1]["unpriced_events"] == 2


def test_limit_answers_the_top_groups_and_leaves_the_total_whole(client, acme):
    rows, total = _expected(client, acme, ["employee"])
    for limit in (1, 3, 10, len(rows) - 1):
        answer = _get(client, acme, group_by="employee", limit=limit)
        assert answer["data"] == rows[:limit]
        assert answer["total"] == total
        assert answer["next_cursor"] is not None
    for limit in (len(rows), 1000):
        answer = _get(client, acme, group_by="employee", limit=limit)
        assert answer["data"] == rows
        assert answer["next_cursor"] is None
    assert _get(client, acme)["total"] == total  # the same as without any group_by


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_cursors_reach_every_group_exactly_once(client, acme, group_by):
    names = group_by.split(",")
    for filters in RANGES:
        rows, total = _expected(client, acme, names, **filters)
        for limit in (1, 2, 7, len(rows) - 1, len(rows)):
            pages = _walk(client, acme, limit, group_by=group_by, **filters)
            assert [row for page in pages for row in page["data"]] == rows, (limit, filters)
            assert all(len(page["data"]) == limit for page in pages[:-1])
            assert 1 <= len(pages[-1]["data"]) <= limit
            assert pages[-1]["next_cursor"] is None
            assert all(page["total"] == total for page in pages)


def test_a_cursor_carries_on_where_its_page_ended(client, acme):
    first = _get(client, acme, group_by="employee", limit=4)
    again = _get(client, acme, group_by="employee", limit=4)
    assert again["next_cursor"] == first["next_cursor"]  # the same position, every time
    rest = _get(client, acme, group_by="employee", limit=1000, cursor=first["next_cursor"])
    everything = _get(client, acme, group_by="employee")["data"]
    assert first["data"] + rest["data"] == everything


def test_a_page_past_the_last_group_is_empty_and_keeps_the_total(client, acme):
    _, total = _expected(client, acme, ["employee"])
    past = _cursor('0:["\\uffff"]')  # after every group: none costs less than nothing
    answer = _get(client, acme, group_by="employee", limit=5, cursor=past)
    assert answer == {"data": [], "total": total, "next_cursor": None}


def test_without_group_by_the_one_row_is_the_total(client, acme):
    answer = _get(client, acme, limit=1)
    assert answer["data"] == [answer["total"]]
    assert answer["next_cursor"] is None


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("limit=0", "bad_request", "limit"),
        ("limit=1001", "bad_request", "limit"),
        ("limit=-5", "bad_request", "limit"),
        ("limit=ten", "bad_request", "limit"),
        ("cursor=%21%21", "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor("12:not json"), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('x:["ann"]'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('12:["ann", "legal"]'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor("12:[7]"), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('12:{"employee": "ann"}'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('-1:["ann"]'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor(f'{2**63}:["ann"]'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('12:["a\\u0000b"]'), "invalid_cursor", "invalid cursor"),
        ("cursor=" + _cursor('12:["\\ud800"]'), "invalid_cursor", "invalid cursor"),
    ],
)
def test_bad_limits_and_cursors_answer_400_in_the_error_shape(client, acme, query, code, message):
    response = client.get(f"/v1/spend?group_by=employee&{query}", headers=acme)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == code
    assert message in error["message"]


def test_a_cursor_of_another_list_or_grouping_answers_400(client, acme):
    events = client.get("/v1/events?limit=1", headers=acme).json()["next_cursor"]
    two = _get(client, acme, group_by="department,employee", limit=1)["next_cursor"]
    for cursor, group_by in ((events, "employee"), (two, "employee"), (two, "session")):
        response = client.get(
            "/v1/spend", params={"group_by": group_by, "cursor": cursor}, headers=acme
        )
        assert response.status_code == 400, (cursor, group_by)
        assert response.json()["error"]["code"] == "invalid_cursor"


def test_no_page_holds_another_tenants_spend(client, keys, acme):
    globex = {"x-p402-api-key": keys["globex_read"]}
    acme_rows, acme_total = _expected(client, acme, ["employee"])
    pages = _walk(client, acme, 3, group_by="employee")
    assert [row for page in pages for row in page["data"]] == acme_rows
    assert "globex-only" not in {row["employee"] for row in acme_rows}
    assert acme_total["events"] == len(HISTORY)

    globex_rows, globex_total = _expected(client, globex, ["employee"])
    assert [row["employee"] for row in globex_rows] == ["ann", "globex-only"]
    for limit in (1, 2):
        pages = _walk(client, globex, limit, group_by="employee")
        assert [row for page in pages for row in page["data"]] == globex_rows
        assert all(page["total"] == globex_total for page in pages)
    # a cursor is a position in the list of the caller's own tenant, nothing more
    cursor = _get(client, acme, group_by="employee", limit=1)["next_cursor"]
    rest = _get(client, globex, group_by="employee", cursor=cursor)["data"]
    assert {row["employee"] for row in rest} <= {"ann", "globex-only"}


def test_the_openapi_document_states_limit_and_cursor(client):
    operation = client.get("/schema/openapi.json").json()["paths"]["/v1/spend"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    limit = parameters["limit"]
    assert limit["in"] == "query" and limit["required"] is False
    assert limit["schema"]["type"] == "integer"
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    assert limit["schema"]["default"] == 100
    assert parameters["cursor"]["in"] == "query" and parameters["cursor"]["required"] is False
    assert "400" in operation["responses"]
