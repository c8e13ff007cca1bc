"""``POST /v1/outcomes``: outcomes of events and sessions, stored and set on the events, all or
nothing, for the key's tenant only."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from p402.api import create_app


@pytest.fixture
def api(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, scheduler=False)) as client:
        yield client


def _event(event_id: str, session: str | None = None, **fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "id": event_id,
        "timestamp": "2026-11-20T09:30:00Z",
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 200,
        "employee": "alice",
        "department": "legal",
        **fields,
    }
    if session:
        event["session"] = session
    return event


def _send(api, key: str, path: str, body: object):
    return api.post(
        path,
        content=json.dumps(body),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )


def _outcomes_of(api, key: str) -> dict[str, str | None]:
    events = api.get("/v1/events", headers={"x-p402-api-key": key}).json()["data"]
    return {event["id"]: event["outcome"] for event in events}


def _stored(engine) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT event_id, session, outcome, quality_score, task_type FROM outcome")
        )
        return sorted((tuple(row) for row in rows), key=lambda row: (row[0] or "", row[1] or ""))


def test_event_and_session_outcomes_are_stored_and_set_on_the_events(api, engine, keys):
    events = [_event("e1", "s1"), _event("e2", "s1"), _event("e3", "s1"), _event("e4", "s2")]
    assert _send(api, keys["ingest"], "/v1/events", events).status_code == 200
    spend_before = api.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()

    response = _send(
        api,
        keys["ingest"],
        "/v1/outcomes",
        [
            {"event_id": "e1", "outcome": "rejected", "quality_score": 0.2},
            {"session": "s1", "outcome": "accepted", "quality_score": 0.9, "task_type": "review"},
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "events_updated": 3}
    # The event's own outcome wins over its session's.
    assert _outcomes_of(api, keys["read"]) == {
        "e1": "rejected",
        "e2": "accepted",
        "e3": "accepted",
        "e4": None,
    }
    assert _stored(engine) == [
        (None, "s1", "accepted", 0.9, "review"),
        ("e1", None, "rejected", 0.2, None),
    ]
    accepted = api.get("/v1/events?outcome=accepted", headers={"x-p402-api-key": keys["read"]})
    assert {event["id"] for event in accepted.json()["data"]} == {"e2", "e3"}
    # Outcomes are no rollup dimension: spend is unchanged.
    spend_after = api.get("/v1/spend", headers={"x-p402-api-key": keys["read"]}).json()
    assert spend_after == spend_before

    # The latest outcome replaces the one before.
    again = _send(api, keys["admin"], "/v1/outcomes", [{"event_id": "e1", "outcome": "revised"}])
    assert again.status_code == 200
    assert _outcomes_of(api, keys["read"])["e1"] == "revised"
    assert ("e1", None, "revised", None, None) in _stored(engine)
    assert len(_stored(engine)) == 2


def test_unknown_events_or_sessions_reject_the_whole_batch(api, engine, keys):
    _send(api, keys["ingest"], "/v1/events", [_event("e1", "s1")])
    _send(api, keys["globex_ingest"], "/v1/events", [_event("theirs", "their-session")])
    for target in (
        {"event_id": "nope"},
        {"event_id": "theirs"},  # another tenant's event is unknown here
        {"session": "their-session"},
    ):
        response = _send(
            api,
            keys["ingest"],
            "/v1/outcomes",
            [{"event_id": "e1", "outcome": "accepted"}, {**target, "outcome": "accepted"}],
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_target"
        assert next(iter(target.values())) in response.json()["error"]["message"]
    assert _stored(engine) == []
    assert _outcomes_of(api, keys["read"]) == {"e1": None}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"event_id": "e1", "outcome": "accepted"}, "JSON list"),
        ([], "JSON list"),
        ([{"event_id": "e1", "outcome": "great"}], "outcome must be one of"),
        ([{"event_id": "e1", "outcome": "accepted", "quality_score": 1.5}], "between 0 and 1"),
        ([{"event_id": "e1", "outcome": "accepted", "quality_score": "0.5"}], "a number"),
        ([{"event_id": "e1", "session": "s1", "outcome": "accepted"}], "exactly one"),
        ([{"outcome": "accepted"}], "exactly one"),
        ([{"event_id": "e1", "outcome": "accepted", "score": 1}], "unknown field"),
    ],
)
def test_malformed_outcomes_are_refused_whole(api, engine, keys, body, problem):
    _send(api, keys["ingest"], "/v1/events", [_event("e1", "s1")])
    response = _send(api, keys["ingest"], "/v1/outcomes", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_outcomes"
    assert problem in response.json()["error"]["message"]
    assert _stored(engine) == []


def test_outcomes_need_an_ingest_or_admin_key_and_json(api, keys):
    _send(api, keys["ingest"], "/v1/events", [_event("e1")])
    body = [{"event_id": "e1", "outcome": "accepted"}]
    assert _send(api, keys["read"], "/v1/outcomes", body).status_code == 403
    assert api.post("/v1/outcomes", json=body).status_code == 401
    assert _send(api, keys["admin"], "/v1/outcomes", body).status_code == 200
    not_json = api.post(
        "/v1/outcomes",
        content=b"event_id=e1",
        headers={"x-p402-api-key": keys["ingest"], "content-type": "text/plain"},
    )
    assert not_json.status_code == 415
