"""Settlement: batching sealed receipts and anchoring each batch's root on chain, as a state
machine persisted in ``settlement_batch``.

::

    sealed ──sign──▶ signed ──send──▶ broadcast ──mined──▶ included ──N blocks──▶ final
      ▲                │                 │                    │
      │                └─ nonce taken ───┤                    │
      │                   by another tx  ▼                    │
      └──────── sign again ◀──────── failed (reverted)        │
      └──────── sign again ◀──────── reorged ◀────────────────┘  (transaction gone)

Every arrow is one transaction on the database, made after the chain call it records, and
conditional on the state it leaves (so two machines never both take it). What makes a crash
at any point harmless:

- The signed transaction (raw bytes, hash, nonce) is saved *before* it is sent. A machine
  restarting on a ``signed`` batch sends the very same bytes again; a node answering
  "already known" or "nonce too low" is asked for the transaction by its hash, and a known
  transaction counts as sent. A batch is never signed twice while its transaction can still
  land: it is signed again only when that transaction reverted, or is unknown to the node
  and its nonce was taken by another transaction, or vanished in a reorg (then the new one
  takes the account's next nonce — the old nonce, which the reorg freed — so at most one of
  them can ever be included).
- An unreachable node (:class:`~p402.settlement.chain.ChainUnavailable`) leaves every batch
  where it is, with the error recorded; the next run picks it up. Batches are taken in order
  and a batch that cannot be sent holds back the signing of later ones, so nonces stay
  in order.
- Inclusion is recorded with block number and block hash; until final, each run checks that
  the transaction is still in the canonical chain (a re-inclusion in another block updates
  the record; a vanished transaction makes the batch ``reorged`` and it is anchored again).
- ``final`` comes after the chain's confirmation count (1 on Tempo, whose finality is
  deterministic); the batch's events then become ``anchored``.

Batches are per tenant, numbered from 1 (``batch_seq``), each up to
:data:`MAX_BATCH_RECEIPTS` receipts in receipt-number order; a leaf's input is the 32-byte
receipt hash. ``P402_SETTLEMENT_INTERVAL_SECONDS`` (default 60) is how often the scheduler
runs :func:`settle`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Connection, Engine, RowMapping, func, select, update
from sqlalchemy.exc import IntegrityError
from web3.exceptions import Web3Exception

from p402.instrumentation.vocabulary import EvidenceStatus
from p402.ledger.clock import now_ms as clock_now_ms
from p402.ledger.clock import to_iso
from p402.ledger.events import EVENTS, Page
from p402.ledger.paging import newest_first
from p402.settlement import merkle
from p402.settlement.chain import (
    AnchorChain,
    Broadcast,
    BroadcastRejected,
    ChainUnavailable,
)
from p402.settlement.receipts import RECEIPTS, SETTLEMENT_BATCHES, SETTLEMENT_LEAVES

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "MAX_BATCH_RECEIPTS",
    "Anchorer",
    "BatchState",
    "SettleReport",
    "batch_json",
    "form_batches",
    "interval_seconds",
    "list_batches",
    "settle",
]

DEFAULT_INTERVAL_SECONDS: Final = 60
MAX_BATCH_RECEIPTS: Final = 10_000


class BatchState(StrEnum):
    SEALED = "sealed"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    INCLUDED = "included"
    FINAL = "final"
    FAILED = "failed"
    REORGED = "reorged"


_TO_SIGN: Final = frozenset({BatchState.SEALED, BatchState.FAILED, BatchState.REORGED})


def interval_seconds(environ: Mapping[str, str] | None = None) -> int:
    """``P402_SETTLEMENT_INTERVAL_SECONDS``: how often batches are formed and anchored."""
    env = os.environ if environ is None else environ
    value = env.get("P402_SETTLEMENT_INTERVAL_SECONDS") or str(DEFAULT_INTERVAL_SECONDS)
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(
            f"P402_SETTLEMENT_INTERVAL_SECONDS must be an integer, not {value!r}"
        ) from None
    if seconds < 1:
        raise ValueError("P402_SETTLEMENT_INTERVAL_SECONDS must be at least 1")
    return seconds


# --- batches -------------------------------------------------------------------------------


def _form_batch(engine: Engine, tenant_id: int, now_ms: int) -> str | None:
    with engine.begin() as connection:
        receipts = connection.execute(
            select(RECEIPTS.c.id, RECEIPTS.c.receipt_hash)
            .outerjoin(SETTLEMENT_LEAVES, SETTLEMENT_LEAVES.c.receipt_id == RECEIPTS.c.id)
            .where(RECEIPTS.c.tenant_id == tenant_id, SETTLEMENT_LEAVES.c.receipt_id.is_(None))
            .order_by(RECEIPTS.c.seq)
            .limit(MAX_BATCH_RECEIPTS)
        ).all()
        if not receipts:
            return None
        last_seq = connection.execute(
            select(func.max(SETTLEMENT_BATCHES.c.seq)).where(
                SETTLEMENT_BATCHES.c.tenant_id == tenant_id
            )
        ).scalar()
        root = merkle.tree_hash([bytes.fromhex(row.receipt_hash) for row in receipts])
        batch_id = "batch_" + secrets.token_hex(12)
        connection.execute(
            SETTLEMENT_BATCHES.insert().values(
                id=batch_id,
                tenant_id=tenant_id,
                seq=(last_seq or 0) + 1,
                state=BatchState.SEALED.value,
                size=len(receipts),
                root=root.hex(),
                created_ms=now_ms,
                updated_ms=now_ms,
                reanchors=0,
            )
        )
        connection.execute(
            SETTLEMENT_LEAVES.insert(),
            [
                {
                    "batch_id": batch_id,
                    "leaf_index": index,
                    "tenant_id": tenant_id,
                    "receipt_id": row.id,
                }
                for index, row in enumerate(receipts)
            ],
        )
        return batch_id


def form_batches(engine: Engine, *, now_ms: int | None = None) -> list[str]:
    """Put every receipt not yet in a batch into a new batch of its tenant (state
    ``sealed``); the new batches' ids."""
    stamp = clock_now_ms() if now_ms is None else now_ms
    with engine.connect() as connection:
        tenants = (
            connection.execute(
                select(RECEIPTS.c.tenant_id)
                .outerjoin(SETTLEMENT_LEAVES, SETTLEMENT_LEAVES.c.receipt_id == RECEIPTS.c.id)
                .where(SETTLEMENT_LEAVES.c.receipt_id.is_(None))
                .distinct()
                .order_by(RECEIPTS.c.tenant_id)
            )
            .scalars()
            .all()
        )
    formed = []
    for tenant_id in tenants:
        while True:
            try:
                batch_id = _form_batch(engine, tenant_id, stamp)
            except IntegrityError:
                continue  # another settler batched some of them first: look again
            if batch_id is None:
                break
            formed.append(batch_id)
    return formed


# --- the machine ---------------------------------------------------------------------------

_STEPS_PER_RUN: Final = 12  # bounds a run on a batch whose transactions keep failing


def _nonce_taken(batch: RowMapping) -> str:
    return (
        f"nonce {batch['nonce']} was taken by another transaction before {batch['tx_hash']} landed"
    )


@dataclass(slots=True)
class SettleReport:
    """What one settlement run did."""

    formed: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # batch id → state after the run
    unavailable: str | None = None  # the node could not be reached: the run stopped
    refused: str | None = None  # the node refused a call or a transaction: the run stopped

    @property
    def final(self) -> list[str]:
        return [batch for batch, state in self.states.items() if state == BatchState.FINAL]


class Anchorer:
    """Moves batches through the anchoring states, one persisted transition at a time."""

    def __init__(self, engine: Engine, chain: AnchorChain) -> None:
        self.engine = engine
        self.chain = chain

    # persistence ---------------------------------------------------------------------------

    def _load(self, batch_id: str) -> RowMapping:
        with self.engine.connect() as connection:
            return (
                connection.execute(
                    select(SETTLEMENT_BATCHES).where(SETTLEMENT_BATCHES.c.id == batch_id)
                )
                .mappings()
                .one()
            )

    def _move(self, batch: RowMapping, to: BatchState, **values: Any) -> BatchState:
        """Persist the transition from the batch's current state; if another machine moved
        it first, nothing is written and its state now is returned."""
        changes: dict[str, Any] = {"state": to.value, "updated_ms": clock_now_ms()}
        changes["last_error"] = None
        changes.update(values)
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(SETTLEMENT_BATCHES)
                .where(
                    SETTLEMENT_BATCHES.c.id == batch["id"],
                    SETTLEMENT_BATCHES.c.state == batch["state"],
                )
                .values(**changes)
            ).rowcount
            if not moved:
                current = connection.execute(
                    select(SETTLEMENT_BATCHES.c.state).where(SETTLEMENT_BATCHES.c.id == batch["id"])
                ).scalar_one()
                return BatchState(current)
            if to is BatchState.FINAL:
                connection.execute(
                    update(EVENTS)
                    .where(
                        EVENTS.c.tenant_id == batch["tenant_id"],
                        EVENTS.c.receipt_id.in_(
                            select(SETTLEMENT_LEAVES.c.receipt_id).where(
                                SETTLEMENT_LEAVES.c.batch_id == batch["id"]
                            )
                        ),
                    )
                    .values(evidence_status=EvidenceStatus.ANCHORED.value)
                )
        return to

    def _note(self, batch_id: str, error: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(SETTLEMENT_BATCHES)
                .where(SETTLEMENT_BATCHES.c.id == batch_id)
                .values(last_error=error[:2000], updated_ms=clock_now_ms())
            )

    # transitions ---------------------------------------------------------------------------

    def _sign(self, batch: RowMapping) -> BatchState:
        signed = self.chain.sign_anchor(bytes.fromhex(batch["root"]))
        superseded = json.loads(batch["superseded_tx"] or "[]")
        if batch["tx_hash"] and batch["tx_hash"] not in superseded:
            superseded.append(batch["tx_hash"])
        return self._move(
            batch,
            BatchState.SIGNED,
            chain_id=self.chain.chain_id,
            submitter=self.chain.submitter,
            method=self.chain.method,
            nonce=signed.nonce,
            raw_tx=signed.raw_tx,
            tx_hash=signed.tx_hash,
            block_number=None,
            block_hash=None,
            superseded_tx=json.dumps(superseded) if superseded else None,
            reanchors=batch["reanchors"] + (1 if batch["tx_hash"] else 0),
        )

    def _send(self, batch: RowMapping) -> BatchState:
        try:
            outcome = self.chain.broadcast(batch["raw_tx"])
        except BroadcastRejected as error:
            if batch["submitter"] == self.chain.submitter:
                raise  # e.g. no funds yet: the same transaction is sent again next run
            # The submitter key was changed; the old key's transaction was refused, so it
            # never entered a pool: sign the batch again with the current key.
            return self._move(
                batch,
                BatchState.FAILED,
                last_error=f"refused, and signed by {batch['submitter']}, no longer the "
                f"submitter: {error}",
            )
        if outcome is Broadcast.NONCE_USED and not self.chain.is_known(batch["tx_hash"]):
            return self._move(batch, BatchState.FAILED, last_error=_nonce_taken(batch))
        return self._move(batch, BatchState.BROADCAST)

    def _await_inclusion(self, batch: RowMapping) -> BatchState:
        inclusion = self.chain.inclusion(batch["tx_hash"])
        if inclusion is None:
            if self.chain.is_known(batch["tx_hash"]):
                return BatchState.BROADCAST  # still pending
            # Dropped from the node's pool: the same bytes again, unless the nonce is gone
            # (and not to this very transaction, mined meanwhile through another node).
            sent = self.chain.broadcast(batch["raw_tx"])
            if sent is Broadcast.NONCE_USED and not self.chain.is_known(batch["tx_hash"]):
                return self._move(batch, BatchState.FAILED, last_error=_nonce_taken(batch))
            return BatchState.BROADCAST
        if inclusion.status != 1:
            return self._move(
                batch,
                BatchState.FAILED,
                block_number=inclusion.block_number,
                block_hash=inclusion.block_hash,
                last_error=f"transaction {batch['tx_hash']} reverted",
            )
        return self._move(
            batch,
            BatchState.INCLUDED,
            block_number=inclusion.block_number,
            block_hash=inclusion.block_hash,
        )

    def _await_finality(self, batch: RowMapping) -> BatchState:
        inclusion = self.chain.inclusion(batch["tx_hash"])
        if inclusion is None:
            if self.chain.is_known(batch["tx_hash"]):  # back in the pool after a reorg
                return self._move(batch, BatchState.BROADCAST, block_number=None, block_hash=None)
            return self._move(
                batch,
                BatchState.REORGED,
                last_error=f"transaction {batch['tx_hash']} left the chain in a reorg",
            )
        if inclusion.status != 1:
            return self._move(
                batch, BatchState.FAILED, last_error=f"transaction {batch['tx_hash']} reverted"
            )
        if inclusion.block_hash != batch["block_hash"]:  # re-included in another block
            with self.engine.begin() as connection:
                connection.execute(
                    update(SETTLEMENT_BATCHES)
                    .where(SETTLEMENT_BATCHES.c.id == batch["id"])
                    .values(
                        block_number=inclusion.block_number,
                        block_hash=inclusion.block_hash,
                        updated_ms=clock_now_ms(),
                    )
                )
            return BatchState.INCLUDED
        confirmations = self.chain.latest_block() - inclusion.block_number + 1
        if confirmations >= self.chain.confirmations:
            return self._move(batch, BatchState.FINAL, final_ms=clock_now_ms())
        return BatchState.INCLUDED

    def step(self, batch_id: str) -> BatchState:
        """Make at most one transition of the batch, persisted; its state afterwards.

        Raises :class:`ChainUnavailable` when the node cannot be reached (nothing changes).
        """
        batch = self._load(batch_id)
        state = BatchState(batch["state"])
        if state in _TO_SIGN:
            return self._sign(batch)
        if state is BatchState.SIGNED:
            return self._send(batch)
        if state is BatchState.BROADCAST:
            return self._await_inclusion(batch)
        if state is BatchState.INCLUDED:
            return self._await_finality(batch)
        return state

    def open_batches(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(SETTLEMENT_BATCHES.c.id)
                    .where(SETTLEMENT_BATCHES.c.state != BatchState.FINAL.value)
                    .order_by(SETTLEMENT_BATCHES.c.created_ms, SETTLEMENT_BATCHES.c.seq)
                ).scalars()
            )

    def run(self, report: SettleReport | None = None) -> SettleReport:
        """Advance every open batch as far as the chain allows now."""
        report = report or SettleReport()
        for batch_id in self.open_batches():
            state = BatchState(self._load(batch_id)["state"])
            try:
                for _ in range(_STEPS_PER_RUN):
                    after = self.step(batch_id)
                    if after == state:
                        break
                    state = after
            except ChainUnavailable as error:
                self._note(batch_id, str(error))
                report.states[batch_id] = state.value
                report.unavailable = str(error)
                break
            except (BroadcastRejected, Web3Exception) as error:
                # e.g. a submitter without funds, or a node refusing a call: kept on the batch
                # for the operator; later batches wait, or they would take nonces ahead of it.
                self._note(batch_id, f"the node refused: {error}")
                report.states[batch_id] = state.value
                report.refused = str(error)
                break
            report.states[batch_id] = state.value
            if state in _TO_SIGN or state is BatchState.SIGNED:
                break
        return report


def settle(engine: Engine, chain: AnchorChain, *, now_ms: int | None = None) -> SettleReport:
    """One settlement run: batch the receipts not yet batched, then anchor what can be."""
    report = SettleReport(formed=form_batches(engine, now_ms=now_ms))
    return Anchorer(engine, chain).run(report)


# --- reading -------------------------------------------------------------------------------


def batch_json(row: RowMapping) -> dict[str, Any]:
    """A settlement batch as the API shows it."""
    return {
        "id": row["id"],
        "batch_seq": row["seq"],
        "state": row["state"],
        "size": row["size"],
        "root": row["root"],
        "created_at": to_iso(row["created_ms"]),
        "updated_at": to_iso(row["updated_ms"]),
        "chain_id": row["chain_id"],
        "submitter": row["submitter"],
        "method": row["method"],
        "nonce": row["nonce"],
        "tx_hash": row["tx_hash"],
        "block_number": row["block_number"],
        "block_hash": row["block_hash"],
        "final_at": to_iso(row["final_ms"]) if row["final_ms"] is not None else None,
        "reanchors": row["reanchors"],
        "superseded_tx": json.loads(row["superseded_tx"] or "[]"),
        "last_error": row["last_error"],
    }


def list_batches(
    connection: Connection,
    tenant_id: int,
    *,
    state: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """The tenant's settlement batches, newest first."""
    statement = select(SETTLEMENT_BATCHES).where(SETTLEMENT_BATCHES.c.tenant_id == tenant_id)
    if state is not None:
        statement = statement.where(SETTLEMENT_BATCHES.c.state == state)
    return newest_first(
        connection,
        statement,
        time_column=SETTLEMENT_BATCHES.c.created_ms,
        key_column=SETTLEMENT_BATCHES.c.id,
        limit=limit,
        cursor=cursor,
        render=batch_json,
    )
