"""Re-rating: pricing past events again under the current price data and negotiated rates.

The first figures an event was recorded with are kept (``original_cost_picos``,
``original_price_version``); re-rating again only ever replaces the current figures.
Provider-reported costs are what was billed and are never re-rated.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, bindparam, select, update

from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import CostEvidence
from p402.ledger import rollups
from p402.ledger.clock import now_ms
from p402.ledger.costing import ledger_cost
from p402.ledger.events import EVENTS
from p402.ledger.price_overrides import price_overrides

__all__ = ["RerateResult", "rerate"]


@dataclass(frozen=True, slots=True)
class RerateResult:
    examined: int
    changed: int


def rerate(
    engine: Engine, tenant_id: int, *, from_ms: int | None = None, to_ms: int | None = None
) -> RerateResult:
    """Re-price the tenant's computed or unpriced events in ``[from_ms, to_ms)``."""
    overrides = price_overrides(engine, tenant_id)
    conditions = [
        EVENTS.c.tenant_id == tenant_id,
        EVENTS.c.cost_evidence != CostEvidence.PROVIDER_REPORTED.value,
    ]
    if from_ms is not None:
        conditions.append(EVENTS.c.ts_ms >= from_ms)
    if to_ms is not None:
        conditions.append(EVENTS.c.ts_ms < to_ms)
    examined = 0
    changes = []
    stamp = now_ms()
    with engine.begin() as connection:
        rows = connection.execute(select(EVENTS).where(and_(*conditions))).mappings()
        for row in rows:
            examined += 1
            usage = TokenUsage(
                row["input_tokens"],
                row["output_tokens"],
                row["cache_read_tokens"],
                row["cache_write_tokens"],
                row["reasoning_tokens"],
            )
            if row["usage_evidence"] == "stream_incomplete":
                continue  # a partial count is never priced
            picos, version = ledger_cost(
                usage,
                model=row["model_used"],
                provider=row["provider"],
                ts_ms=row["ts_ms"],
                overrides=overrides,
            )
            if (picos, version) == (row["cost_picos"], row["price_version"]):
                continue
            first_rerating = row["rerated_ms"] is None
            changes.append(
                {
                    "seq_": row["seq"],
                    "cost_picos": picos,
                    "price_version": version,
                    "cost_evidence": (
                        CostEvidence.UNPRICED.value
                        if picos is None
                        else CostEvidence.COMPUTED.value
                    ),
                    "original_cost_picos": (
                        row["cost_picos"] if first_rerating else row["original_cost_picos"]
                    ),
                    "original_price_version": (
                        row["price_version"] if first_rerating else row["original_price_version"]
                    ),
                    "rerated_ms": stamp,
                }
            )
        if changes:
            seqs = [change["seq_"] for change in changes]
            rollups.remove_events(connection, tenant_id, seqs)
            connection.execute(
                update(EVENTS)
                .where(EVENTS.c.seq == bindparam("seq_"))
                .values(
                    cost_picos=bindparam("cost_picos"),
                    price_version=bindparam("price_version"),
                    cost_evidence=bindparam("cost_evidence"),
                    original_cost_picos=bindparam("original_cost_picos"),
                    original_price_version=bindparam("original_price_version"),
                    rerated_ms=bindparam("rerated_ms"),
                ),
                changes,
            )
            rollups.add_events(connection, tenant_id, seqs)
    return RerateResult(examined, len(changes))
