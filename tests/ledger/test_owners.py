"""Every ingest registers the owners and sessions its events name."""

from __future__ import annotations

from sqlalchemy import text

from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import Role, create_key


def _event(event_id: str, ts_ms: int, **owners: str) -> EventRecord:
    return EventRecord(
        event_id=event_id,
        ts_ms=ts_ms,
        usage_evidence="provider_response",
        cost_evidence="computed",
        privacy_mode="metadata_only",
        model_used="gpt-5-mini",
        cost_picos=5,
        **owners,
    )  # type: ignore[arg-type]


def _rows(engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_owners_and_sessions_are_registered_once_and_sessions_span_their_events(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    first = [
        _event(
            "a",
            1_000,
            department="legal",
            employee="alice",
            session="s1",
            project="phoenix",
            client="initech",
        ),
        _event("b", 3_000, employee="alice", session="s1"),
    ]
    later = [
        _event("c", 2_000, department="legal", employee="bob", session="s1"),
        _event("d", 9_000, employee="carol", session="s2", department="sales"),
    ]
    for batch in (first, first, later, later):  # delivered twice each
        insert_events(engine, acme.tenant_id, batch)

    assert _rows(engine, "SELECT name FROM department ORDER BY name") == [("legal",), ("sales",)]
    assert _rows(engine, "SELECT name, department FROM employee ORDER BY name") == [
        ("alice", "legal"),
        ("bob", "legal"),
        ("carol", "sales"),
    ]
    assert _rows(engine, "SELECT name, department, client FROM project") == [
        ("phoenix", "legal", "initech")
    ]
    assert _rows(
        engine, "SELECT name, employee, first_event_ms, last_event_ms FROM session ORDER BY name"
    ) == [("s1", "alice", 1_000, 3_000), ("s2", "carol", 9_000, 9_000)]
