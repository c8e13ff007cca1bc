"""Spend over any time range from the rollups, time series and drift, on both databases."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text

from p402.ledger.clock import from_iso, now_ms
from p402.ledger.database import alembic_config, connect, migrate
from p402.ledger.drift import InvalidWindows, Window, drift
from p402.ledger.events import (
    HOUR_MS,
    EventFilter,
    EventRecord,
    insert_events,
    spend,
    spend_groups,
)
from p402.ledger.keys import Role, create_key
from p402.ledger.rollups import DAY_MS
from p402.ledger.timeseries import Interval, InvalidTimeseries, spend_timeseries

# Twelve whole days that end before today: part-day ranges can fall on either side of "now".
TODAY = now_ms() // DAY_MS * DAY_MS
DAY0 = TODAY - 12 * DAY_MS
GROUPINGS = [[], ["department"], ["department", "model"], ["employee", "provider"]]


def _event(event_id: str, ts_ms: int, **values: object) -> EventRecord:
    defaults: dict[str, object] = {
        "usage_evidence": "provider_response",
        "cost_evidence": "computed",
        "privacy_mode": "metadata_only",
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_picos": 1_000_000,
    }
    defaults.update(values)
    return EventRecord(event_id=event_id, ts_ms=ts_ms, **defaults)  # type: ignore[arg-type]


def _random_events(rng: random.Random, count: int, start: int, span: int) -> list[EventRecord]:
    events = []
    for i in range(count):
        unpriced = rng.random() < 0.1
        events.append(
            _event(
                f"e{i}",
                start + rng.randrange(0, span),
                cost_evidence="unpriced" if unpriced else "computed",
                provider=rng.choice(["openai", "anthropic"]),
                model_used=rng.choice(["gpt-5-mini", "claude-sonnet-4-5", None]),
                input_tokens=rng.randrange(0, 5000),
                output_tokens=rng.randrange(0, 500),
                cost_picos=None if unpriced else rng.randrange(1, 10**9),
                department=rng.choice(["legal", "sales", None]),
                employee=rng.choice(["alice", "bob", "carol"]),
                workflow=rng.choice(["review", None]),
            )
        )
    return events


@pytest.fixture
def tenants(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    return acme.tenant_id, globex.tenant_id


def _sorted(rows, group_by):
    return sorted(rows, key=lambda row: tuple(str(row[d]) for d in group_by))


def test_part_day_ranges_from_the_rollup_equal_a_scan_of_the_events(engine, tenants):
    acme, globex = tenants
    rng = random.Random(7)
    insert_events(engine, acme, _random_events(rng, 600, DAY0, 12 * DAY_MS + 3 * HOUR_MS))
    insert_events(engine, globex, _random_events(rng, 200, DAY0, 12 * DAY_MS))
    ranges = [(None, DAY0 + 5 * DAY_MS + 7), (DAY0 + DAY_MS // 3, None)]
    for _ in range(12):  # edges early and late in their days: both ways of reading them
        start = DAY0 + rng.randrange(0, 13 * DAY_MS)
        ranges.append((start, start + rng.randrange(1, 6 * DAY_MS)))
    ranges.append((DAY0 + 2 * DAY_MS + 5, DAY0 + 2 * DAY_MS + 9 * HOUR_MS))  # within one day
    ranges.append((TODAY - 30 * DAY_MS + 5 * HOUR_MS, now_ms()))  # the last 30 days
    with engine.connect() as connection:
        for from_ms, to_ms in ranges:
            for equals in ({}, {"department": "legal"}):
                event_filter = EventFilter(equals=equals, from_ms=from_ms, to_ms=to_ms)
                for group_by in GROUPINGS:
                    rolled, rolled_total = spend(connection, acme, event_filter, group_by)
                    raw, raw_total = spend(
                        connection, acme, event_filter, group_by, from_rollups=False
                    )
                    assert _sorted(rolled, group_by) == _sorted(raw, group_by), (from_ms, to_ms)
                    assert rolled_total == raw_total
                by_day = spend_groups(connection, acme, event_filter, ["model"], bucket_ms=DAY_MS)
                raw_by_day = spend_groups(
                    connection, acme, event_filter, ["model"], bucket_ms=DAY_MS, from_rollups=False
                )
                assert by_day == raw_by_day


def test_spend_of_the_last_30_days_counts_each_event_once(engine, tenants):
    acme, _ = tenants
    # An event now and then, and a cost that would show if a part-day were counted twice.
    insert_events(engine, acme, [_event(f"e{d}", DAY0 + d * DAY_MS + 1) for d in range(12)])
    insert_events(engine, acme, [_event("recent", now_ms() - 1, cost_picos=7)])
    with engine.connect() as connection:
        _, total = spend(connection, acme, EventFilter(from_ms=now_ms() - 30 * DAY_MS), [])
    assert total["events"] == 13
    assert total["cost_usd"] == "0.000012000007"


def test_timeseries_buckets_add_up_to_the_spend_of_the_range(engine, tenants):
    acme, globex = tenants
    rng = random.Random(3)
    insert_events(engine, acme, _random_events(rng, 400, DAY0, 12 * DAY_MS))
    insert_events(engine, globex, _random_events(rng, 100, DAY0, 12 * DAY_MS))
    event_filter = EventFilter(from_ms=DAY0 + 5 * HOUR_MS, to_ms=DAY0 + 11 * DAY_MS + 7)
    with engine.connect() as connection:
        _, total = spend(connection, acme, event_filter, [])
        rows, _ = spend(connection, acme, event_filter, ["department"])
        for interval in Interval:
            series = spend_timeseries(
                connection, acme, event_filter, ["department"], interval, now_ms=now_ms()
            )
            assert series["total"] == total
            points = series["data"]
            assert sum(point["events"] for point in points) == total["events"]
            assert sum(Decimal(point["cost_usd"]) for point in points) == Decimal(total["cost_usd"])
            for point in points:  # each bucket's groups add up to the bucket
                assert sum(group["events"] for group in point["groups"]) == point["events"]
            for row in rows:  # and each group's buckets to the group's spend
                in_group = [
                    group
                    for point in points
                    for group in point["groups"]
                    if group["department"] == row["department"]
                ]
                assert sum(Decimal(group["cost_usd"]) for group in in_group) == Decimal(
                    row["cost_usd"]
                )
            for before, after in itertools.pairwise(points):  # a continuous axis
                assert before["end"] == after["start"]
            assert points[0]["start"] <= series["from"] < points[0]["end"]
            assert points[-1]["start"] < series["to"] <= points[-1]["end"]


def test_empty_buckets_are_present_at_zero(engine, tenants):
    acme, _ = tenants
    insert_events(engine, acme, [_event("a", DAY0 + HOUR_MS), _event("b", DAY0 + 3 * DAY_MS)])
    with engine.connect() as connection:
        series = spend_timeseries(
            connection,
            acme,
            EventFilter(from_ms=DAY0, to_ms=DAY0 + 5 * DAY_MS),
            [],
            Interval.DAY,
            now_ms=now_ms(),
        )
    assert [point["events"] for point in series["data"]] == [1, 0, 0, 1, 0]
    assert series["data"][1]["cost_usd"] == "0"
    assert "groups" not in series["data"][1]


def test_weeks_start_on_monday_and_months_on_the_first(engine, tenants):
    acme, _ = tenants
    wednesday = from_iso("2026-09-30T10:00:00Z")
    insert_events(engine, acme, [_event("w", wednesday), _event("o", from_iso("2026-10-05"))])
    with engine.connect() as connection:
        weeks = spend_timeseries(
            connection,
            acme,
            EventFilter(from_ms=wednesday, to_ms=from_iso("2026-10-06")),
            [],
            Interval.WEEK,
            now_ms=now_ms(),
        )
        months = spend_timeseries(
            connection,
            acme,
            EventFilter(from_ms=wednesday, to_ms=from_iso("2026-10-06")),
            [],
            Interval.MONTH,
            now_ms=now_ms(),
        )
    assert [(p["start"], p["events"]) for p in weeks["data"]] == [
        ("2026-09-28T00:00:00.000Z", 1),
        ("2026-10-05T00:00:00.000Z", 1),
    ]
    assert datetime.fromisoformat(weeks["data"][0]["start"]).astimezone(UTC).weekday() == 0
    assert [(p["start"], p["end"], p["events"]) for p in months["data"]] == [
        ("2026-09-01T00:00:00.000Z", "2026-10-01T00:00:00.000Z", 1),
        ("2026-10-01T00:00:00.000Z", "2026-11-01T00:00:00.000Z", 1),
    ]


def test_hourly_series_and_filters_the_rollup_does_not_hold_come_from_the_events(engine, tenants):
    acme, _ = tenants
    insert_events(
        engine,
        acme,
        [
            _event("a", DAY0 + 10 * 60_000, workflow="review"),
            _event("b", DAY0 + 2 * HOUR_MS + 1, workflow="review"),
            _event("c", DAY0 + 2 * HOUR_MS + 2, workflow="draft"),
        ],
    )
    with engine.connect() as connection:
        hourly = spend_timeseries(
            connection,
            acme,
            EventFilter(equals={"workflow": "review"}, from_ms=DAY0, to_ms=DAY0 + 3 * HOUR_MS),
            ["workflow"],
            Interval.HOUR,
            now_ms=now_ms(),
        )
    assert [p["events"] for p in hourly["data"]] == [1, 0, 1]
    assert hourly["data"][2]["groups"] == [
        {
            "workflow": "review",
            "cost_usd": "0.000001",
            "events": 1,
            "input_tokens": 100,
            "output_tokens": 10,
            "unpriced_events": 0,
        }
    ]


def test_a_series_defaults_to_a_range_ending_now_and_refuses_too_many_buckets(engine, tenants):
    acme, _ = tenants
    now = DAY0 + 5 * DAY_MS + HOUR_MS // 2
    with engine.connect() as connection:
        daily = spend_timeseries(connection, acme, EventFilter(), [], Interval.DAY, now_ms=now)
        assert len(daily["data"]) == 31  # 30 days back from a time within a day
        assert daily["to"].startswith(datetime.fromtimestamp(now / 1000, UTC).date().isoformat())
        with pytest.raises(InvalidTimeseries, match="more than 1000 buckets"):
            spend_timeseries(
                connection,
                acme,
                EventFilter(from_ms=DAY0 - 60 * DAY_MS, to_ms=DAY0),
                [],
                Interval.HOUR,
                now_ms=now,
            )
        with pytest.raises(InvalidTimeseries, match="before"):
            spend_timeseries(
                connection,
                acme,
                EventFilter(from_ms=DAY0, to_ms=DAY0),
                [],
                Interval.DAY,
                now_ms=now,
            )


# --- drift ---------------------------------------------------------------------------------

BASELINE = Window(DAY0, DAY0 + 4 * DAY_MS)
CURRENT = Window(DAY0 + 6 * DAY_MS, DAY0 + 8 * DAY_MS)


def _crafted_drift_events() -> list[EventRecord]:
    """Legal: 4 calls of 1 USD on gpt-5-mini in the baseline (4 days); 2 calls of 3 USD on
    claude and one unpriced call in the current window (2 days). Sales: one call of 2 USD in
    the baseline only."""
    usd = 10**12
    events = [
        _event(f"b{i}", BASELINE.from_ms + i * DAY_MS + 5, department="legal", cost_picos=usd)
        for i in range(4)
    ]
    events += [
        _event(
            f"c{i}",
            CURRENT.from_ms + i * HOUR_MS + 5,
            department="legal",
            model_used="claude-sonnet-4-5",
            provider="anthropic",
            cost_picos=3 * usd,
        )
        for i in range(2)
    ]
    events.append(
        _event(
            "c-unpriced",
            CURRENT.from_ms + 9,
            department="legal",
            cost_picos=None,
            cost_evidence="unpriced",
        )
    )
    events.append(_event("s", BASELINE.from_ms + 11, department="sales", cost_picos=2 * usd))
    events.append(_event("outside", CURRENT.to_ms + 1, department="legal", cost_picos=usd))
    # outcomes: 3 of 4 accepted in the baseline, 1 of 2 in the current window
    outcomes = ["accepted"] * 3 + ["rejected", "accepted", "failed"]
    for event, outcome in zip(events[:6], outcomes, strict=True):
        event.outcome = outcome
    return events


def test_drift_reports_the_change_of_cost_mix_and_outcomes_per_group(engine, tenants):
    acme, globex = tenants
    insert_events(engine, acme, _crafted_drift_events())
    insert_events(engine, globex, [_event("g", CURRENT.from_ms + 1, department="legal")])
    with engine.connect() as connection:
        report = drift(
            connection, acme, EventFilter(), ["department"], baseline=BASELINE, current=CURRENT
        )
    assert [row["department"] for row in report["data"]] == ["legal", "sales"]
    legal, sales = report["data"]
    assert legal["baseline"]["cost_usd"] == "4"
    assert legal["current"]["cost_usd"] == "6"
    assert legal["current"]["events"] == 3
    assert legal["current"]["cost_per_event_usd"] == "3"  # priced events only
    assert legal["current"]["cost_per_day_usd"] == "3"
    assert legal["baseline"]["cost_per_day_usd"] == "1"
    assert legal["change"]["cost_usd"] == {"absolute": "2", "relative": "0.5"}
    assert legal["change"]["events"] == {"absolute": -1, "relative": "-0.25"}
    assert legal["change"]["cost_per_event_usd"] == {"absolute": "2", "relative": "2"}
    assert legal["change"]["cost_per_day_usd"] == {"absolute": "2", "relative": "2"}
    assert legal["model_mix"] == [
        {
            "model": "claude-sonnet-4-5",
            "baseline_cost_usd": "0",
            "current_cost_usd": "6",
            "baseline_share": "0",
            "current_share": "1",
            "share_change": "1",
        },
        {
            "model": "gpt-5-mini",
            "baseline_cost_usd": "4",
            "current_cost_usd": "0",
            "baseline_share": "1",
            "current_share": "0",
            "share_change": "-1",
        },
    ]
    outcomes = {row["outcome"]: row for row in legal["outcomes"]}
    assert outcomes["accepted"]["baseline_share"] == "0.75"
    assert outcomes["accepted"]["current_share"] == "0.5"
    assert outcomes["accepted"]["share_change"] == "-0.25"
    assert outcomes["failed"]["current_events"] == 1
    assert sales["current"]["events"] == 0
    assert sales["change"]["cost_usd"] == {"absolute": "-2", "relative": "-1"}
    assert sales["current"]["cost_per_event_usd"] is None
    assert sales["change"]["cost_per_event_usd"] == {"absolute": None, "relative": None}
    assert sales["outcomes"] == []
    assert report["total"]["baseline"]["cost_usd"] == "6"
    assert report["total"]["change"]["cost_usd"] == {"absolute": "0", "relative": "0"}
    shares = {row["model"]: row["current_share"] for row in report["total"]["model_mix"]}
    assert shares == {"claude-sonnet-4-5": "1", "gpt-5-mini": "0"}


def test_drift_from_the_rollup_equals_drift_from_the_events(engine, tenants):
    """Part-day windows (rollup plus edges) answer what the events say."""
    acme, _ = tenants
    rng = random.Random(11)
    events = _random_events(rng, 400, DAY0, 12 * DAY_MS)
    for event in events:
        event.outcome = rng.choice([None, "accepted", "rejected"])
    insert_events(engine, acme, events)
    baseline = Window(DAY0 + 7 * HOUR_MS, DAY0 + 5 * DAY_MS + 3)
    current = Window(DAY0 + 6 * DAY_MS + 13 * HOUR_MS, DAY0 + 11 * DAY_MS + 20 * HOUR_MS)
    with engine.connect() as connection:
        rolled = drift(
            connection, acme, EventFilter(), ["department"], baseline=baseline, current=current
        )
        scanned = drift(  # workflow is not a rollup dimension: this one reads the events
            connection,
            acme,
            EventFilter(),
            ["department", "workflow"],
            baseline=baseline,
            current=current,
        )
    totals = rolled["total"]
    assert totals == scanned["total"]
    assert totals["baseline"]["events"] == sum(
        1 for e in events if baseline.from_ms <= e.ts_ms < baseline.to_ms
    )


def test_empty_or_reversed_windows_are_refused(engine, tenants):
    acme, _ = tenants
    with engine.connect() as connection:
        for baseline, current in [
            (Window(DAY0, DAY0), CURRENT),
            (BASELINE, Window(CURRENT.to_ms, CURRENT.from_ms)),
        ]:
            with pytest.raises(InvalidWindows, match="must begin before it ends"):
                drift(connection, acme, EventFilter(), [], baseline=baseline, current=current)


def test_upgrading_a_ledger_builds_its_project_rollups(database_url):
    """By day from its spend rollup, by hour from its events."""
    engine = connect(database_url)
    hour = 20000 * 24 + 5
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0009")
            connection.execute(
                text(
                    "INSERT INTO tenant (id, name, max_privacy_mode, fingerprint_key, created_ms) "
                    "VALUES (1, 'acme', 'metadata_only', '00', 0)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO spend_rollup (tenant_id, day, department, project, client, "
                    "employee, provider, model, cost_picos, events, input_tokens, output_tokens, "
                    "unpriced_events) VALUES "
                    "(1, 20000, 'legal', 'p', '', 'alice', 'openai', 'gpt-5', 10, 2, 100, 10, 0), "
                    "(1, 20000, 'legal', 'p', '', 'bob', 'openai', 'gpt-5', 5, 2, 50, 5, 1), "
                    "(1, 20001, 'legal', 'p', '', 'bob', 'openai', 'gpt-5', 7, 1, 1, 1, 0)"
                )
            )
            for n, (cost, employee) in enumerate([(10, "alice"), (None, "bob"), (4, "bob")]):
                connection.execute(
                    text(
                        "INSERT INTO economic_event (tenant_id, event_id, ts_ms, received_ms, "
                        "provider, model_used, input_tokens, output_tokens, cost_picos, "
                        "cost_mismatch, cost_evidence, usage_evidence, policy_result, "
                        "privacy_mode, department, employee, source, attempt, evidence_status) "
                        "VALUES (1, :id, :ts, 0, 'openai', 'gpt-5', 3, 1, :cost, :no, "
                        "'computed', 'provider_response', 'allowed', 'metadata_only', 'legal', "
                        ":employee, 'p402', 0, 'pending')"
                    ),
                    {
                        "id": f"e{n}",
                        "ts": hour * HOUR_MS + n,
                        "cost": cost,
                        "no": False,
                        "employee": employee,
                    },
                )
        migrate(engine)
        with engine.connect() as connection:
            daily = connection.execute(
                text(
                    "SELECT day, department, project, client, provider, model, cost_picos, "
                    "events, input_tokens, output_tokens, unpriced_events "
                    "FROM project_spend_rollup ORDER BY day"
                )
            ).all()
            hourly = connection.execute(
                text(
                    "SELECT hour, department, project, client, provider, model, cost_picos, "
                    "events, input_tokens, output_tokens, unpriced_events "
                    "FROM project_spend_rollup_hourly"
                )
            ).all()
        assert [tuple(row) for row in daily] == [
            (20000, "legal", "p", "", "openai", "gpt-5", 15, 4, 150, 15, 1),
            (20001, "legal", "p", "", "openai", "gpt-5", 7, 1, 1, 1, 0),
        ]
        assert [tuple(row) for row in hourly] == [
            (hour, "legal", "", "", "openai", "gpt-5", 14, 3, 9, 3, 1)
        ]
    finally:
        engine.dispose()
