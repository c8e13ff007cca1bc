"""The spend rollup stays equal to the events it summarises, whatever the ingest does."""

from __future__ import annotations

import random

import pytest

from p402.ledger.clock import from_iso
from p402.ledger.events import EventFilter, EventRecord, insert_events, spend
from p402.ledger.keys import Role, create_key
from p402.ledger.price_overrides import add_price_override
from p402.ledger.rerating import rerate
from p402.ledger.rollups import DAY_MS

DAY0 = from_iso("2026-11-01T00:00:00Z")
GROUPINGS = [
    [],
    ["department"],
    ["department", "model"],
    ["employee", "provider"],
    ["project", "client", "model"],
]


def _random_events(rng: random.Random, count: int) -> list[EventRecord]:
    events = []
    for i in range(count):
        unpriced = rng.random() < 0.1
        events.append(
            EventRecord(
                event_id=f"e{i}",
                ts_ms=DAY0 + rng.randrange(0, 10 * DAY_MS),
                usage_evidence="provider_response",
                cost_evidence="unpriced" if unpriced else "computed",
                privacy_mode="metadata_only",
                provider=rng.choice(["openai", "anthropic"]),
                model_used=rng.choice(["gpt-5-mini", "claude-sonnet-4-5", None]),
                input_tokens=rng.randrange(0, 5000),
                output_tokens=rng.randrange(0, 500),
                cost_picos=None if unpriced else rng.randrange(1, 10**9),
                department=rng.choice(["legal", "sales", None]),
                project=rng.choice(["phoenix", None]),
                client=rng.choice(["initech", None]),
                employee=rng.choice(["alice", "bob", "carol"]),
                source=rng.choice(["p402", "p402", "genai"]),
                response_key=f"openai:resp-{rng.randrange(0, count)}",
            )
        )
    return events


def _both(connection, tenant_id, event_filter, group_by):
    def key(row: dict[str, object]) -> tuple[str, ...]:
        return tuple(str(row[d]) for d in group_by)

    rolled, rolled_total = spend(connection, tenant_id, event_filter, group_by)
    raw, raw_total = spend(connection, tenant_id, event_filter, group_by, from_rollups=False)
    return sorted(rolled, key=key), rolled_total, sorted(raw, key=key), raw_total


@pytest.mark.parametrize("seed", [1, 2])
def test_rollups_equal_a_scan_of_the_events(engine, seed):
    rng = random.Random(seed)
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    other, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    events = _random_events(rng, 300)
    for start in range(0, 300, 50):  # batches, some delivered twice
        insert_events(engine, identity.tenant_id, events[start : start + 50])
        if rng.random() < 0.5:
            insert_events(engine, identity.tenant_id, events[start : start + 50])
    insert_events(engine, other.tenant_id, events[:100])
    add_price_override(
        engine, identity.tenant_id, model="gpt-5-mini", input_per_mtok="1", output_per_mtok="2"
    )
    rerate(engine, identity.tenant_id, from_ms=DAY0 + 3 * DAY_MS)
    filters = [
        EventFilter(),
        EventFilter(equals={"department": "legal"}),
        EventFilter(from_ms=DAY0 + 2 * DAY_MS, to_ms=DAY0 + 7 * DAY_MS),
        EventFilter(equals={"model": "gpt-5-mini", "employee": "bob"}, from_ms=DAY0 + DAY_MS),
    ]
    with engine.connect() as connection:
        for event_filter in filters:
            for group_by in GROUPINGS:
                rolled, rolled_total, raw, raw_total = _both(
                    connection, identity.tenant_id, event_filter, group_by
                )
                assert rolled == raw, (event_filter, group_by)
                assert rolled_total == raw_total
        _, total = spend(connection, identity.tenant_id, EventFilter(), [])
        assert total["events"] > 0
