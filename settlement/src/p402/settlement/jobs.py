"""The settlement module's two scheduled jobs, as the scheduler runs them.

- :func:`seal_idle_sessions`: seal sessions idle for ``P402_RECEIPT_IDLE_SECONDS``
  (default 300) into receipts; run it every few seconds to a minute.
- :func:`settle`: batch the new receipts and move every batch's anchor forward, on a given
  chain; :func:`settle_on_configured_chain` does it on the process's chain
  (:func:`configured_chain`, made once from ``P402_CHAIN_*``; ``P402_CHAIN_RPC_URL`` unset:
  the embedded, ephemeral EVM), every ``P402_SETTLEMENT_INTERVAL_SECONDS`` (default 60).

Both are safe to run concurrently with ingest, with each other, and again after a crash.
"""

from __future__ import annotations

import functools

from sqlalchemy import Engine

from p402.settlement.anchoring import SettleReport, form_batches, interval_seconds
from p402.settlement.anchoring import settle as _settle
from p402.settlement.chain import AnchorChain, chain_from_environment
from p402.settlement.sealing import idle_seconds, seal_idle

__all__ = [
    "chain_from_environment",
    "configured_chain",
    "form_batches",
    "idle_seconds",
    "interval_seconds",
    "seal_idle_sessions",
    "settle",
    "settle_on_configured_chain",
]


def seal_idle_sessions(engine: Engine, now_ms: int | None = None) -> list[str]:
    """Seal every idle session (and quiet day of events without a session); new receipt ids."""
    return seal_idle(engine, now_ms=now_ms)


def settle(engine: Engine, chain: AnchorChain, now_ms: int | None = None) -> SettleReport:
    """Batch the receipts not yet batched and anchor every open batch as far as possible."""
    return _settle(engine, chain, now_ms=now_ms)


@functools.cache
def configured_chain() -> AnchorChain:
    """The process's chain, made once from the environment (the embedded EVM must outlive
    each run: its state is the chain)."""
    return chain_from_environment()


def settle_on_configured_chain(engine: Engine, now_ms: int | None = None) -> SettleReport:
    """:func:`settle` on :func:`configured_chain`."""
    return _settle(engine, configured_chain(), now_ms=now_ms)
