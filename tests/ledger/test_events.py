"""The ledger's event store on SQLite and PostgreSQL: idempotency, exactness, tenancy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text

from p402.instrumentation.money import to_picos
from p402.ledger.events import (
    EventFilter,
    EventRecord,
    InvalidCursor,
    insert_events,
    list_events,
    spend,
)
from p402.ledger.keys import Role, create_key, hash_key, resolve_key


def _record(event_id: str, ts_ms: int, **values: object) -> EventRecord:
    defaults: dict[str, object] = {
        "usage_evidence": "provider_response",
        "cost_evidence": "computed",
        "privacy_mode": "metadata_only",
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_picos": to_picos(Decimal("0.0005331")),
    }
    defaults.update(values)
    return EventRecord(event_id=event_id, ts_ms=ts_ms, **defaults)  # type: ignore[arg-type]


def test_a_batch_delivered_three_times_is_stored_once(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    batch = [_record(f"evt-{i}", 1_000 + i) for i in range(50)]
    assert insert_events(engine, identity.tenant_id, batch) == 50
    assert insert_events(engine, identity.tenant_id, batch) == 0
    assert insert_events(engine, identity.tenant_id, batch[::-1]) == 0
    with engine.connect() as connection:
        _, total = spend(connection, identity.tenant_id, EventFilter(), [])
    assert total["events"] == 50
    assert Decimal(total["cost_usd"]) == Decimal("0.0005331") * 50


def test_amounts_are_exact_to_the_picodollar(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    amounts = ["0.000000000001", "1234567.123456789012", "0.0000244"]
    insert_events(
        engine,
        identity.tenant_id,
        [_record(f"e{i}", i, cost_picos=to_picos(Decimal(a))) for i, a in enumerate(amounts)],
    )
    with engine.connect() as connection:
        page = list_events(connection, identity.tenant_id, EventFilter(), limit=10)
        _, total = spend(connection, identity.tenant_id, EventFilter(), [])
    assert sorted(event["cost_usd"] for event in page.data) == sorted(amounts)
    assert Decimal(total["cost_usd"]) == sum(Decimal(a) for a in amounts)


def test_unpriced_events_count_but_carry_no_cost(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        identity.tenant_id,
        [_record("priced", 1), _record("unpriced", 2, cost_picos=None, cost_evidence="unpriced")],
    )
    with engine.connect() as connection:
        page = list_events(connection, identity.tenant_id, EventFilter(), limit=10)
        _, total = spend(connection, identity.tenant_id, EventFilter(), [])
    assert {event["id"]: event["cost_usd"] for event in page.data} == {
        "priced": "0.0005331",
        "unpriced": None,
    }
    assert total["events"] == 2 and total["unpriced_events"] == 1
    assert total["cost_usd"] == "0.0005331"


def test_spend_groups_by_any_dimensions_with_totals(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        identity.tenant_id,
        [
            _record("a", 1, department="legal", model_used="m1", cost_picos=3),
            _record("b", 2, department="legal", model_used="m1", cost_picos=4),
            _record("c", 3, department="legal", model_used="m2", cost_picos=5),
            _record("d", 4, department="sales", model_used="m1", cost_picos=6),
        ],
    )
    with engine.connect() as connection:
        rows, total = spend(connection, identity.tenant_id, EventFilter(), ["department", "model"])
        legal, _ = spend(
            connection, identity.tenant_id, EventFilter(equals={"department": "legal"}), ["model"]
        )
    by_key = {(row["department"], row["model"]): row for row in rows}
    assert by_key[("legal", "m1")]["events"] == 2
    assert by_key[("legal", "m1")]["cost_usd"] == "0.000000000007"
    assert by_key[("legal", "m1")]["input_tokens"] == 200
    assert total["events"] == 4 and total["cost_usd"] == "0.000000000018"
    assert {row["model"]: row["events"] for row in legal} == {"m1": 2, "m2": 1}


def test_listing_pages_newest_first_with_a_cursor(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine, identity.tenant_id, [_record(f"e{i:02}", 100 + i // 2) for i in range(25)]
    )
    seen: list[str] = []
    cursor = None
    with engine.connect() as connection:
        while True:
            page = list_events(
                connection, identity.tenant_id, EventFilter(), limit=10, cursor=cursor
            )
            seen.extend(event["id"] for event in page.data)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        with pytest.raises(InvalidCursor):
            list_events(connection, identity.tenant_id, EventFilter(), limit=1, cursor="!!")
    assert len(seen) == len(set(seen)) == 25
    timestamps = [int(event_id[1:]) // 2 for event_id in seen]
    assert timestamps == sorted(timestamps, reverse=True)


def test_tenants_see_only_their_own_events(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    insert_events(engine, acme.tenant_id, [_record("shared-id", 1, department="legal")])
    assert insert_events(engine, globex.tenant_id, [_record("shared-id", 1)]) == 1
    with engine.connect() as connection:
        globex_events = list_events(connection, globex.tenant_id, EventFilter(), limit=10).data
        _, acme_total = spend(connection, acme.tenant_id, EventFilter(), [])
    assert [event["department"] for event in globex_events] == [None]
    assert acme_total["events"] == 1


def test_api_keys_are_stored_only_as_hashes(engine):
    identity, key = create_key(engine, tenant="acme", role=Role.READ)
    assert resolve_key(engine, key) == identity
    assert resolve_key(engine, key + "x") is None
    with engine.connect() as connection:
        stored = [tuple(row) for row in connection.execute(text("SELECT * FROM api_key"))]
    assert key not in str(stored)
    assert hash_key(key) in str(stored)
