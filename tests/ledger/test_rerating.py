"""Re-rating past events keeps the figures they were first recorded with."""

from __future__ import annotations

from decimal import Decimal

from p402.instrumentation.money import to_picos
from p402.instrumentation.pricing import price_version
from p402.ledger.clock import from_iso
from p402.ledger.events import EventFilter, EventRecord, insert_events, list_events
from p402.ledger.keys import Role, create_key
from p402.ledger.price_overrides import add_price_override
from p402.ledger.rerating import rerate

TS = from_iso("2026-11-20T00:00:00Z")


def _event(event_id: str, **values: object) -> EventRecord:
    base: dict[str, object] = {
        "usage_evidence": "provider_response",
        "cost_evidence": "computed",
        "privacy_mode": "metadata_only",
        "provider": "openai",
        "model_used": "gpt-5-mini",
        "input_tokens": 1342,
        "output_tokens": 214,
        "cache_read_tokens": 1024,
        "cache_write_tokens": 0,
        "reasoning_tokens": 192,
        "cost_picos": to_picos(Decimal("0.0005331")),
        "price_version": price_version(),
    }
    base.update(values)
    return EventRecord(event_id=event_id, ts_ms=TS, **base)  # type: ignore[arg-type]


def _events(engine, tenant_id):
    with engine.connect() as connection:
        page = list_events(connection, tenant_id, EventFilter(), limit=10)
    return {event["id"]: event for event in page.data}


def test_rerating_applies_new_rates_and_keeps_the_original_figures(engine):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        identity.tenant_id,
        [
            _event("computed"),
            _event(
                "billed",
                cost_evidence="provider_reported",
                cost_picos=to_picos(Decimal("0.1")),
                price_version=None,
            ),
        ],
    )
    assert rerate(engine, identity.tenant_id).changed == 0  # same prices: nothing changes

    first = add_price_override(
        engine, identity.tenant_id, model="gpt-5-mini", input_per_mtok="1", output_per_mtok="1"
    )
    result = rerate(engine, identity.tenant_id)
    assert (result.examined, result.changed) == (1, 1)
    event = _events(engine, identity.tenant_id)["computed"]
    assert event["cost_usd"] == "0.001556"  # (1342 + 214) tokens at 1 USD per million
    assert event["price_version"] == f"tenant-rates {first}"
    assert event["original_cost_usd"] == "0.0005331"
    assert event["original_price_version"] == price_version()

    add_price_override(
        engine, identity.tenant_id, model="gpt-5-mini", input_per_mtok="2", output_per_mtok="2"
    )
    rerate(engine, identity.tenant_id)
    events = _events(engine, identity.tenant_id)
    assert events["computed"]["cost_usd"] == "0.003112"
    assert events["computed"]["original_cost_usd"] == "0.0005331"  # still the first figures
    assert events["billed"]["cost_usd"] == "0.1"  # what was billed is never re-rated
    assert events["billed"]["original_cost_usd"] is None


def test_rerating_stays_within_its_tenant_and_time_range(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    insert_events(engine, acme.tenant_id, [_event("a")])
    insert_events(engine, globex.tenant_id, [_event("g")])
    add_price_override(engine, acme.tenant_id, model="*", input_per_mtok="1", output_per_mtok="1")
    assert rerate(engine, acme.tenant_id, from_ms=TS + 1).changed == 0
    assert rerate(engine, acme.tenant_id, from_ms=TS, to_ms=TS + 1).changed == 1
    assert _events(engine, globex.tenant_id)["g"]["cost_usd"] == "0.0005331"
