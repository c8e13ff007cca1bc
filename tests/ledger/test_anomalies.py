"""Anomalous sessions: more than 3 times the employee's 30-day average session cost, flagged
once, incrementally, within 60 s of the events arriving."""

from __future__ import annotations

from sqlalchemy import text

from p402.ledger.anomalies import (
    MIN_BASELINE_SESSIONS,
    AnomalyStatus,
    detect_anomalies,
    list_anomalies,
    review_anomaly,
)
from p402.ledger.clock import now_ms
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import Role, create_key
from p402.ledger.rollups import DAY_MS

MICRO = 1_000_000  # picodollars in one micro-dollar


def _event(event_id: str, ts_ms: int, cost_picos: int | None, **owners: str) -> EventRecord:
    return EventRecord(
        event_id=event_id,
        ts_ms=ts_ms,
        usage_evidence="provider_response",
        cost_evidence="computed" if cost_picos is not None else "unpriced",
        privacy_mode="metadata_only",
        model_used="gpt-5-mini",
        cost_picos=cost_picos,
        **owners,
    )  # type: ignore[arg-type]


def _history(
    engine, tenant_id: int, employee: str, start_ms: int, costs: list[int], label: str = "past"
) -> None:
    """One past session per cost, a day apart, each of two events."""
    records = []
    for index, cost in enumerate(costs):
        at = start_ms + index * DAY_MS
        session = f"{employee}-{label}-{index}"
        records += [
            _event(f"{session}-a", at, cost // 2, employee=employee, session=session),
            _event(
                f"{session}-b", at + 60_000, cost - cost // 2, employee=employee, session=session
            ),
        ]
    insert_events(engine, tenant_id, records)


def _session(engine, tenant_id: int, employee: str, name: str, cost: int, at_ms: int) -> None:
    insert_events(
        engine,
        tenant_id,
        [
            _event(
                f"{name}-1", at_ms, cost // 3, employee=employee, session=name, department="legal"
            ),
            _event(f"{name}-2", at_ms + 1_000, cost - cost // 3, employee=employee, session=name),
        ],
    )


def _flagged(engine, tenant_id: int) -> list[dict]:
    with engine.connect() as connection:
        return list_anomalies(connection, tenant_id, limit=100).data


def _age_arrivals(engine, minutes: int, prefix: str) -> None:
    """Pretend the events of the sessions named ``prefix…`` arrived ``minutes`` earlier (the
    receiver stamps real time)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE session SET last_received_ms = last_received_ms - :ms "
                "WHERE name LIKE :prefix"
            ),
            {"ms": minutes * 60_000, "prefix": prefix + "%"},
        )


def test_a_session_over_three_times_the_baseline_is_flagged_within_60_seconds(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    now = now_ms()
    _history(engine, acme.tenant_id, "alice", now - 10 * DAY_MS, [10 * MICRO] * 5)  # mean 10
    _session(engine, acme.tenant_id, "alice", "alice-big", 31 * MICRO, now - 120_000)
    _session(engine, acme.tenant_id, "alice", "alice-normal", 25 * MICRO, now - 60_000)
    _session(engine, acme.tenant_id, "alice", "alice-exactly-3x", 30 * MICRO, now - 30_000)
    with engine.connect() as connection:
        arrived = connection.execute(
            text("SELECT last_received_ms FROM session WHERE name = 'alice-big'")
        ).scalar_one()

    detected_at = arrived + 15_000  # the job runs every 15 s
    detection = detect_anomalies(engine, detected_at)

    (anomaly,) = _flagged(engine, acme.tenant_id)
    assert detection.flagged == 1
    assert anomaly["session"] == "alice-big"
    assert anomaly["employee"] == "alice"
    assert anomaly["department"] == "legal"
    assert anomaly["cost_usd"] == "0.000031"
    assert anomaly["baseline_usd"] == "0.00001"
    assert anomaly["ratio"] == 3.1
    assert anomaly["status"] == "open"
    assert anomaly["baseline_sessions"] == 5
    assert detected_at - arrived <= 60_000
    with engine.connect() as connection:  # never blocked: its events are untouched
        policies = connection.execute(
            text("SELECT DISTINCT policy_result FROM economic_event WHERE session = 'alice-big'")
        ).scalars()
        assert list(policies) == ["allowed"]


def test_no_baseline_without_enough_past_sessions_of_the_employee_in_30_days(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    now = now_ms()
    few = MIN_BASELINE_SESSIONS - 1
    _history(engine, acme.tenant_id, "bob", now - 10 * DAY_MS, [MICRO] * few)
    _history(engine, acme.tenant_id, "bob", now - 60 * DAY_MS, [MICRO] * 5, "old")  # too old
    _history(engine, acme.tenant_id, "carol", now - 10 * DAY_MS, [MICRO] * 5)  # someone else
    _history(engine, globex.tenant_id, "bob", now - 10 * DAY_MS, [MICRO] * 5)  # other tenant
    _session(engine, acme.tenant_id, "bob", "bob-big", 100 * MICRO, now)
    detect_anomalies(engine, now_ms())
    assert _flagged(engine, acme.tenant_id) == []
    assert _flagged(engine, globex.tenant_id) == []

    _history(engine, acme.tenant_id, "bob", now - 20 * DAY_MS, [MICRO], "fifth")
    detect_anomalies(engine, now_ms())
    (anomaly,) = _flagged(engine, acme.tenant_id)
    assert anomaly["session"] == "bob-big"
    assert anomaly["baseline_sessions"] == MIN_BASELINE_SESSIONS


def test_unpriced_sessions_are_neither_flagged_nor_counted_in_the_baseline(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    now = now_ms()
    _history(engine, acme.tenant_id, "dan", now - 10 * DAY_MS, [MICRO] * 5)
    insert_events(  # five unpriced past sessions would halve the mean if counted as 0
        engine,
        acme.tenant_id,
        [
            _event(
                f"dan-unpriced-{i}", now - (5 + i) * DAY_MS, None, employee="dan", session=f"u{i}"
            )
            for i in range(5)
        ],
    )
    _session(engine, acme.tenant_id, "dan", "dan-2x", 2 * MICRO, now)
    insert_events(
        engine, acme.tenant_id, [_event("dan-new", now, None, employee="dan", session="dan-u")]
    )
    detect_anomalies(engine, now_ms())
    assert _flagged(engine, acme.tenant_id) == []


def test_detection_is_incremental_and_flags_each_session_once(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    now = now_ms()
    _history(engine, acme.tenant_id, "erin", now - 10 * DAY_MS, [MICRO] * 5)
    _session(engine, acme.tenant_id, "erin", "erin-growing", 2 * MICRO, now - 3_600_000)
    _age_arrivals(engine, 60, "erin-past")
    _age_arrivals(engine, 10, "erin-growing")

    first = detect_anomalies(engine, now_ms())
    assert (first.examined, first.flagged) == (6, 0)
    # Nothing arrived since: only the overlap for ingest transactions still committing (the
    # sessions that arrived in the RESCAN_MS before the newest arrival) is looked at again.
    assert detect_anomalies(engine, now_ms()).examined == 1

    # The session grows past 3x the baseline: only it is looked at again, and flagged.
    insert_events(
        engine,
        acme.tenant_id,
        [_event("erin-more", now, 2 * MICRO, employee="erin", session="erin-growing")],
    )
    again = detect_anomalies(engine, now_ms())
    assert (again.examined, again.flagged) == (1, 1)
    insert_events(
        engine,
        acme.tenant_id,
        [_event("erin-even-more", now, MICRO, employee="erin", session="erin-growing")],
    )
    assert detect_anomalies(engine, now_ms()).flagged == 0  # once per session
    (anomaly,) = _flagged(engine, acme.tenant_id)
    assert anomaly["cost_usd"] == "0.000004"


def test_review_marks_an_anomaly_reviewed_or_dismissed_for_its_tenant_only(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    now = now_ms()
    _history(engine, acme.tenant_id, "fay", now - 10 * DAY_MS, [MICRO] * 5)
    _session(engine, acme.tenant_id, "fay", "fay-big", 10 * MICRO, now)
    detect_anomalies(engine, now)
    (anomaly,) = _flagged(engine, acme.tenant_id)

    assert (
        review_anomaly(
            engine,
            globex.tenant_id,
            anomaly["id"],
            status=AnomalyStatus.DISMISSED,
            note=None,
            reviewer="key_x",
            now_ms=now,
        )
        is None
    )
    reviewed = review_anomaly(
        engine,
        acme.tenant_id,
        anomaly["id"],
        status=AnomalyStatus.REVIEWED,
        note="quarter-end batch job",
        reviewer="key_admin",
        now_ms=now + 5_000,
    )
    assert reviewed is not None
    assert reviewed["status"] == "reviewed"
    assert reviewed["note"] == "quarter-end batch job"
    with engine.connect() as connection:
        assert (
            list_anomalies(connection, acme.tenant_id, status=AnomalyStatus.OPEN, limit=10).data
            == []
        )
        (shown,) = list_anomalies(
            connection, acme.tenant_id, status=AnomalyStatus.REVIEWED, limit=10
        ).data
    assert shown["id"] == anomaly["id"]
