"""Budget alerts: 80, 90, 95, 100 % and projected, each once per scope and period, even with
two servers; listed by ``GET /v1/alerts`` and queued to the tenant's webhooks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import count

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from p402.api import create_app
from p402.api.scheduler import Scheduler
from p402.ledger.alerts import LATE_CROSSINGS_MS, fire_alerts
from p402.ledger.clock import from_iso
from p402.ledger.database import connect
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import resolve_key

USD = 10**12  # picodollars
NOV_28_NOON = 1_795_867_200_000  # 27.5 of November's 30 days elapsed
NOV_10 = 1_794_301_200_000
DEC_1 = 1_796_115_600_000
DEC_2_NOON = 1_796_212_800_000
_ids = count()


@pytest.fixture
def api(engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, scheduler=False)) as client:
        yield client


def _spend(engine, tenant_id: int, usd: int, ts_ms: int = NOV_10, **owners: str) -> None:
    insert_events(
        engine,
        tenant_id,
        [
            EventRecord(
                event_id=f"spend-{next(_ids)}",
                ts_ms=ts_ms,
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                model_used="gpt-5-mini",
                cost_picos=usd * USD,
                **owners,
            )  # type: ignore[arg-type]
        ],
    )


def _budget(api, admin_key: str, *budgets: dict[str, str]) -> None:
    response = api.put("/v1/budgets", json=list(budgets), headers={"x-p402-api-key": admin_key})
    assert response.status_code == 200, response.text


def _alerts(api, key: str, **params: object) -> dict:
    response = api.get("/v1/alerts", params=params, headers={"x-p402-api-key": key})
    assert response.status_code == 200, response.text
    return response.json()


def _thresholds(api, key: str) -> list[str]:
    return sorted(str(alert["threshold"]) for alert in _alerts(api, key)["data"])


def _tenant(engine, key: str) -> int:
    identity = resolve_key(engine, key)
    assert identity is not None
    return identity.tenant_id


def test_each_threshold_fires_once_per_scope_and_period(engine, api, keys):
    acme = _tenant(engine, keys["admin"])
    _budget(api, keys["admin"], {"scope": "department", "name": "legal", "cap_usd": "100"})
    scheduler = Scheduler(engine, clock=lambda: clock_ms, environ={})
    clock_ms = NOV_28_NOON

    def run_repeatedly() -> None:
        for _ in range(3):
            assert scheduler.run_once("alerts").ran

    steps = [
        (79, []),  # 79 %, projected 86.18: nothing yet
        (1, ["80"]),
        (11, ["80", "90"]),
        (4, ["80", "90", "95", "projected"]),  # projected 103.64 > 100
        (5, ["100", "80", "90", "95", "projected"]),
        (50, ["100", "80", "90", "95", "projected"]),  # past 100 %: nothing new this period
    ]
    for usd, expected in steps:
        _spend(engine, acme, usd, department="legal")
        run_repeatedly()
        assert _thresholds(api, keys["read"]) == expected
        clock_ms += 60_000

    newest = _alerts(api, keys["read"])["data"][0]  # newest first
    assert newest == {
        "id": newest["id"],
        "scope": "department",
        "name": "legal",
        "period": "month",
        "threshold": 100,
        "spent_usd": "100",
        "cap_usd": "100",
        "projected_usd": newest["projected_usd"],
        "created_at": "2026-11-28T12:04:00.000Z",
        "period_start": "2026-11-01T00:00:00.000Z",
        "period_end": "2026-12-01T00:00:00.000Z",
    }
    assert newest["projected_usd"].startswith("109.0")

    # A new period starts from zero, and its thresholds fire again.
    clock_ms = DEC_2_NOON
    run_repeatedly()
    assert len(_alerts(api, keys["read"])["data"]) == 5
    _spend(engine, acme, 85, ts_ms=DEC_1, department="legal")
    run_repeatedly()
    december = [
        (alert["threshold"], alert["period_start"])
        for alert in _alerts(api, keys["read"])["data"]
        if alert["period_start"].startswith("2026-12")
    ]
    assert sorted(str(threshold) for threshold, _ in december) == ["80", "projected"]


def test_a_session_budget_alerts_in_the_period_of_its_session_not_in_every_later_one(
    engine, api, keys
):
    acme = _tenant(engine, keys["admin"])
    _budget(
        api, keys["admin"], {"scope": "session", "name": "s-old", "cap_usd": "50", "period": "day"}
    )
    _spend(engine, acme, 60, ts_ms=NOV_10, session="s-old")
    fired = [fire_alerts(engine, now) for now in (NOV_10 + 60_000, NOV_28_NOON, DEC_2_NOON)]
    assert fired[0] == 5 and fired[1:] == [0, 0]  # 80, 90, 95, 100 and projected, once
    state = api.get("/v1/budgets", headers={"x-p402-api-key": keys["read"]}).json()["data"][0]
    assert (state["spent_usd"], state["status"]) == ("0", "ok")  # nothing in today's period


def test_under_a_cap_of_zero_the_first_spend_passes_every_threshold(engine, api, keys):
    acme = _tenant(engine, keys["admin"])
    _budget(api, keys["admin"], {"scope": "department", "name": "zero", "cap_usd": "0"})
    assert fire_alerts(engine, NOV_28_NOON) == 0  # nothing spent: nothing to warn of
    _spend(engine, acme, 1, department="zero")
    fire_alerts(engine, NOV_28_NOON)
    assert _thresholds(api, keys["read"]) == ["100", "80", "90", "95", "projected"]


def test_spend_of_a_periods_last_moments_fires_its_alerts_in_the_next_periods_first_hour(
    engine, api, keys
):
    acme = _tenant(engine, keys["admin"])
    _budget(api, keys["admin"], {"scope": "department", "name": "legal", "cap_usd": "10"})
    october_last_seconds = from_iso("2026-10-31T23:59:50Z")
    assert fire_alerts(engine, october_last_seconds - 60_000) == 0  # the run before
    _spend(engine, acme, 11, ts_ms=october_last_seconds, department="legal")
    # the next run falls in November: October's crossings are still found, once
    november_first_run = october_last_seconds + 40_000
    assert fire_alerts(engine, november_first_run) == 5
    assert fire_alerts(engine, november_first_run + 60_000) == 0
    starts = {alert["period_start"] for alert in _alerts(api, keys["read"])["data"]}
    assert starts == {"2026-10-01T00:00:00.000Z"}
    # spend reported for October after its last hour is past: nothing more is looked for
    _budget(api, keys["admin"], {"scope": "department", "name": "sales", "cap_usd": "10"})
    _spend(engine, acme, 11, ts_ms=october_last_seconds, department="sales")
    assert fire_alerts(engine, november_first_run + LATE_CROSSINGS_MS) == 0


def test_two_servers_running_the_alert_job_together_fire_each_alert_once(
    engine, database_url, api, keys
):
    acme = _tenant(engine, keys["admin"])
    _budget(
        api,
        keys["admin"],
        {"scope": "organization", "cap_usd": "10"},
        {"scope": "project", "name": "phoenix", "cap_usd": "10", "period": "week"},
    )
    _spend(engine, acme, 10, ts_ms=NOV_28_NOON - 3_600_000, project="phoenix")
    engines = [connect(database_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    fired: list[int] = []

    def server(e) -> None:
        barrier.wait()
        fired.append(fire_alerts(e, NOV_28_NOON))  # as if the lease overran: no lease check

    threads = [threading.Thread(target=server, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for e in engines:
        e.dispose()
    assert sum(fired) == 10  # 80, 90, 95, 100 and projected, for each of the two budgets
    alerts = _alerts(api, keys["read"], limit=1000)["data"]
    assert len(alerts) == 10
    assert {(a["scope"], a["name"]) for a in alerts} == {
        ("organization", ""),
        ("project", "phoenix"),
    }


def test_alerts_page_newest_first_per_tenant_and_are_queued_to_webhooks(engine, api, keys):
    acme = _tenant(engine, keys["admin"])
    admin = {"x-p402-api-key": keys["admin"]}
    api.put(
        "/v1/webhooks",
        json=[{"url": "https://hooks.example/one"}, {"url": "https://hooks.example/two"}],
        headers=admin,
    )
    _budget(api, keys["admin"], {"scope": "employee", "name": "alice", "cap_usd": "1"})
    _spend(engine, acme, 2, employee="alice")
    assert fire_alerts(engine, NOV_28_NOON) == 5

    first = _alerts(api, keys["read"], limit=2)
    second = _alerts(api, keys["read"], limit=2, cursor=first["next_cursor"])
    third = _alerts(api, keys["read"], limit=2, cursor=second["next_cursor"])
    ids = [a["id"] for page in (first, second, third) for a in page["data"]]
    assert len(ids) == len(set(ids)) == 5
    assert third["next_cursor"] is None
    bad = api.get("/v1/alerts?cursor=nonsense", headers={"x-p402-api-key": keys["read"]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"

    with engine.connect() as connection:
        queued = connection.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT alert_id) FROM webhook_delivery")
        ).one()
    assert tuple(queued) == (10, 5)  # each alert, to each of the two webhooks

    assert _alerts(api, keys["globex_read"])["data"] == []
    assert api.get("/v1/alerts", headers={"x-p402-api-key": keys["ingest"]}).status_code == 403
    assert api.get("/v1/alerts").status_code == 401
