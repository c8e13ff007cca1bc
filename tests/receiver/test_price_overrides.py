"""Negotiated rates: the receiver prices a tenant's calls at its own rates where they apply."""

from __future__ import annotations

from decimal import Decimal

from p402.instrumentation.money import from_picos
from p402.instrumentation.pricing import price_version
from p402.ledger.clock import from_iso
from p402.ledger.keys import Role, create_key
from p402.ledger.price_overrides import add_price_override
from p402.receiver.conversion import convert_spans
from p402.receiver.otlp import PlainSpan
from p402.receiver.policy import ingest_policy

START_NS = from_iso("2026-11-20T00:00:00Z") * 10**6
SPAN = {
    "p402.event.id": "e1",
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-5-mini",
    "gen_ai.response.model": "gpt-5-mini-2025-08-07",
    "gen_ai.usage.input_tokens": 1342,
    "gen_ai.usage.output_tokens": 214,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.cache_write.input_tokens": 0,
}


def _cost(engine, tenant_id: int, attributes: dict[str, object] = SPAN):
    span = PlainSpan("t" * 32, "s" * 16, "chat", START_NS, START_NS, attributes, {})
    (record,) = convert_spans([span], ingest_policy(engine, tenant_id)).records
    return from_picos(record.cost_picos or 0), record.price_version


def test_negotiated_rates_replace_the_public_prices_while_in_force(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    assert _cost(engine, acme.tenant_id) == (Decimal("0.0005331"), price_version())
    override = add_price_override(
        engine,
        acme.tenant_id,
        provider="openai",
        model="gpt-5-mini*",
        input_per_mtok="0.20",
        cache_read_per_mtok="0.02",
        output_per_mtok="1.60",
        valid_from_ms=from_iso("2026-11-01"),
        valid_to_ms=from_iso("2026-12-01"),
    )
    # (1342 - 1024) * 0.20 + 1024 * 0.02 + 214 * 1.60, per million tokens
    expected = (
        Decimal(318) * Decimal("0.20") + 1024 * Decimal("0.02") + 214 * Decimal("1.60")
    ) / 1_000_000
    assert _cost(engine, acme.tenant_id) == (expected, f"tenant-rates {override}")
    assert _cost(engine, globex.tenant_id) == (Decimal("0.0005331"), price_version())
    other_model = {**SPAN, "gen_ai.response.model": "gpt-4.1-mini-2025-04-14"}
    assert _cost(engine, acme.tenant_id, other_model)[1] == price_version()
