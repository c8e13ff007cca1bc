"""The planner's statistics job: a session's events are found by the session index, not by
scanning the tenant's events in time order."""

from __future__ import annotations

from sqlalchemy import select

from p402.ledger.database import refresh_statistics
from p402.ledger.events import EVENTS, EventFilter, EventRecord, insert_events, list_events
from p402.ledger.keys import Role, create_key


def _plan(engine, tenant_id: int, session: str) -> str:
    statement = (
        EventFilter(equals={"session": session})
        .apply(select(EVENTS), tenant_id)
        .order_by(EVENTS.c.ts_ms.desc(), EVENTS.c.seq.desc())
        .limit(51)
    )
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
        rows = connection.exec_driver_sql(prefix + str(compiled)).all()
    return " ".join(str(value) for row in rows for value in row)


def test_after_refreshing_statistics_a_sessions_events_use_the_session_index(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    records = [
        EventRecord(
            event_id=f"e{n}",
            ts_ms=1_700_000_000_000 + n,
            usage_evidence="provider_response",
            cost_evidence="computed",
            privacy_mode="metadata_only",
            model_used="gpt-5-mini",
            cost_picos=1,
            session=f"s{n % 500}",
        )
        for n in range(5000)
    ]
    for start in range(0, len(records), 1000):
        insert_events(engine, identity.tenant_id, records[start : start + 1000])

    refresh_statistics(engine)

    assert "ix_event_tenant_session" in _plan(engine, identity.tenant_id, "s7")
    with engine.connect() as connection:
        page = list_events(
            connection, identity.tenant_id, EventFilter(equals={"session": "s7"}), limit=50
        )
    assert [event["id"] for event in page.data] == [f"e{n}" for n in range(4507, 0, -500)]
