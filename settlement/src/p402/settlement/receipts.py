"""Receipts: what a sealed receipt says, its hash, and how the API shows it.

A **session receipt** covers a session's economic events; each event is a **leaf** of it (its
own canonical JSON and hash, in the receipt's RFC 6962 event tree, whose root the receipt
names). Events without a session are sealed per tenant and UTC day into receipts whose
``session`` is ``null``. Each receipt names the previous receipt of its tenant by number and
hash (``sequence``, ``previous_receipt_hash``): a per-tenant hash chain. The receipt's bytes
are RFC 8785 JSON; its hash is their SHA-256; amounts are decimal strings.

Settlement fields (batch, Merkle proof, anchor transaction) are kept outside the hashed body,
so anchoring never changes a receipt's hash.

**Immutability.** A receipt is written sealed and never changes: no code path updates it,
and this module refuses any SQLAlchemy UPDATE of the ``receipt``, ``receipt_leaf`` and
``settlement_leaf`` tables (:class:`SealedReceiptError`). The database refuses too: on
PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE of those tables; DELETE is
accepted only in a transaction that first ran ``SET LOCAL p402.erasing = 'on'``, which is
what tenant data deletion does (:mod:`p402.ledger.erasure`). On SQLite a trigger refuses
UPDATE.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    Update,
    and_,
    event,
    select,
)

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.vocabulary import OWNER_DIMENSIONS, PrivacyMode
from p402.ledger.clock import to_iso
from p402.ledger.events import EVENT_FIELDS, EVENTS, EventFilter, Page, event_json
from p402.ledger.models import (
    Receipt,
    ReceiptLeaf,
    SettlementBatch,
    SettlementLeaf,
    receipt_status,
)
from p402.ledger.paging import newest_first
from p402.settlement.canonical import sha256_hex

__all__ = [
    "LEAF_FIELDS",
    "LEAF_VERSION",
    "RECEIPTS",
    "RECEIPT_LEAVES",
    "RECEIPT_VERSION",
    "SETTLEMENT_BATCHES",
    "SETTLEMENT_LEAVES",
    "SealedReceiptError",
    "event_leaf",
    "get_receipt",
    "list_receipts",
    "receipt_body",
    "receipt_hash",
    "receipt_json",
]

RECEIPTS = Receipt.__table__  # type: ignore[attr-defined]
RECEIPT_LEAVES = ReceiptLeaf.__table__  # type: ignore[attr-defined]
SETTLEMENT_BATCHES = SettlementBatch.__table__  # type: ignore[attr-defined]
SETTLEMENT_LEAVES = SettlementLeaf.__table__  # type: ignore[attr-defined]

RECEIPT_VERSION: Final = "p402.receipt/1"
LEAF_VERSION: Final = "p402.event-leaf/1"

_CHANGING_FIELDS: Final = frozenset({"outcome", "receipt_id", "evidence_status"})
LEAF_FIELDS: Final = tuple(name for name in EVENT_FIELDS if name not in _CHANGING_FIELDS)
"""The event fields a leaf seals: the event as the API shows it, less what changes after
sealing (the outcome reported later, the receipt and evidence status themselves)."""

_IMMUTABLE_TABLES: Final = frozenset({RECEIPTS.name, RECEIPT_LEAVES.name, SETTLEMENT_LEAVES.name})


class SealedReceiptError(PermissionError):
    """An attempt to change a sealed receipt."""


@event.listens_for(Engine, "before_execute")
def _refuse_updates_of_sealed_receipts(
    connection: Connection,
    clause: object,
    multiparams: object,
    params: object,
    execution_options: object,
) -> None:
    if isinstance(clause, Update):
        table = getattr(clause.table, "name", None)
        if table in _IMMUTABLE_TABLES:
            raise SealedReceiptError(f"sealed receipts are immutable: UPDATE of {table} refused")


# --- the sealed content --------------------------------------------------------------------


def event_leaf(row: RowMapping) -> dict[str, Any]:
    """The leaf an event row becomes in its receipt."""
    shown = event_json(row)
    return {"version": LEAF_VERSION, **{name: shown[name] for name in LEAF_FIELDS}}


def _distinct(values: Iterable[str | None]) -> list[str]:
    return sorted({value for value in values if value is not None})


def _total(values: Iterable[int | None]) -> int | None:
    """The sum of the measured values; ``None`` when none was measured (never a false 0)."""
    measured = [value for value in values if value is not None]
    return sum(measured) if measured else None


def _highest_privacy_mode(modes: Iterable[str]) -> str | None:
    known = [PrivacyMode(mode) for mode in modes if mode in PrivacyMode.__members__.values()]
    return max(known, key=lambda mode: mode.rank).value if known else None


def receipt_body(
    *,
    receipt_id: str,
    tenant: str,
    sequence: int,
    previous_receipt_hash: str | None,
    session: str | None,
    part: int,
    continues: str | None,
    sealed_ms: int,
    sealed_by: str,
    events: Sequence[RowMapping],
    events_root: str,
) -> dict[str, Any]:
    """The hashed body of a receipt over ``events`` (rows of ``economic_event``)."""
    priced = [row["cost_picos"] for row in events if row["cost_picos"] is not None]
    model_changes = Counter(
        (row["model_original"], row["model_used"] or row["model_requested"])
        for row in events
        if row["model_original"] is not None
    )
    return {
        "version": RECEIPT_VERSION,
        "receipt_id": receipt_id,
        "tenant": tenant,
        "sequence": sequence,
        "previous_receipt_hash": previous_receipt_hash,
        "session": session,
        "part": part,
        "continues": continues,
        "sealed_at": to_iso(sealed_ms),
        "sealed_by": sealed_by,
        "period": {
            "from": to_iso(min(row["ts_ms"] for row in events)),
            "to": to_iso(max(row["ts_ms"] for row in events)),
        },
        "owners": {
            dimension: _distinct(row[dimension] for row in events)
            for dimension in OWNER_DIMENSIONS
            if dimension != "session"
        },
        "models": _distinct(row["model_used"] or row["model_requested"] for row in events),
        "providers": _distinct(row["provider"] for row in events),
        "events": {
            "count": len(events),
            "root": events_root,
            "unpriced": len(events) - len(priced),
            "without_usage": sum(
                1 for row in events if row["input_tokens"] is None and row["output_tokens"] is None
            ),
        },
        "tokens": {
            "input": _total(row["input_tokens"] for row in events),
            "output": _total(row["output_tokens"] for row in events),
            "cache_read": _total(row["cache_read_tokens"] for row in events),
            "cache_write": _total(row["cache_write_tokens"] for row in events),
            "reasoning": _total(row["reasoning_tokens"] for row in events),
        },
        "cost_usd": usd_str(from_picos(sum(priced))) if priced else None,
        "policy_results": dict(Counter(row["policy_result"] for row in events)),
        "routing": {
            "rationale": _distinct(row["policy_reason"] for row in events),
            "model_changes": [
                {"from": original, "to": used, "events": count}
                for (original, used), count in sorted(
                    model_changes.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ],
        },
        "privacy_mode": _highest_privacy_mode(row["privacy_mode"] for row in events),
        "privacy_modes": dict(Counter(row["privacy_mode"] for row in events)),
    }


def receipt_hash(body: Mapping[str, Any]) -> str:
    return sha256_hex(body)


# --- reading -------------------------------------------------------------------------------


def _with_settlement(statement: Select[Any]) -> Select[Any]:
    return statement.outerjoin(
        SETTLEMENT_LEAVES, SETTLEMENT_LEAVES.c.receipt_id == RECEIPTS.c.id
    ).outerjoin(SETTLEMENT_BATCHES, SETTLEMENT_BATCHES.c.id == SETTLEMENT_LEAVES.c.batch_id)


_COLUMNS: Final = (
    RECEIPTS.c.id,
    RECEIPTS.c.sealed_ms,
    RECEIPTS.c.body,
    RECEIPTS.c.receipt_hash,
    SETTLEMENT_LEAVES.c.leaf_index,
    SETTLEMENT_BATCHES.c.id.label("batch_id"),
    SETTLEMENT_BATCHES.c.seq.label("batch_seq"),
    SETTLEMENT_BATCHES.c.state.label("batch_state"),
    SETTLEMENT_BATCHES.c.size.label("tree_size"),
    SETTLEMENT_BATCHES.c.root,
    SETTLEMENT_BATCHES.c.chain_id,
    SETTLEMENT_BATCHES.c.tx_hash,
    SETTLEMENT_BATCHES.c.block_number,
    SETTLEMENT_BATCHES.c.block_hash,
    SETTLEMENT_BATCHES.c.submitter,
    SETTLEMENT_BATCHES.c.method,
    SETTLEMENT_BATCHES.c.final_ms,
)


def receipt_json(row: RowMapping) -> dict[str, Any]:
    """A receipt as the API shows it: the sealed body, its hash, and (outside the hash) its
    settlement: the batch, and the anchor once the batch's transaction is final."""
    status = receipt_status(row["batch_state"])
    settlement = None
    if row["batch_id"] is not None:
        settlement = {
            "batch_id": row["batch_id"],
            "batch_seq": row["batch_seq"],
            "state": row["batch_state"],
            "leaf_index": row["leaf_index"],
            "tree_size": row["tree_size"],
            "root": row["root"],
            "chain_id": row["chain_id"],
            "tx_hash": row["tx_hash"],
            "block_number": row["block_number"],
            "block_hash": row["block_hash"],
            "submitter": row["submitter"],
            "method": row["method"],
            "anchored_at": to_iso(row["final_ms"]) if status == "anchored" else None,
        }
    return {
        "id": row["id"],
        "receipt": json.loads(row["body"]),
        "receipt_hash": row["receipt_hash"],
        "status": status,
        "settlement": settlement,
    }


def get_receipt(connection: Connection, tenant_id: int, receipt_id: str) -> dict[str, Any] | None:
    """One of the tenant's receipts; ``None`` for an unknown id or another tenant's."""
    statement = _with_settlement(select(*_COLUMNS).select_from(RECEIPTS)).where(
        RECEIPTS.c.tenant_id == tenant_id, RECEIPTS.c.id == receipt_id
    )
    row = connection.execute(statement).mappings().first()
    return receipt_json(row) if row else None


def list_receipts(
    connection: Connection,
    tenant_id: int,
    event_filter: EventFilter,
    *,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """The tenant's receipts, newest sealed first. ``session`` matches the receipt's session;
    other owner, model or evidence filters match receipts holding such an event; ``from`` /
    ``to`` match receipts whose period overlaps the range."""
    conditions = [RECEIPTS.c.tenant_id == tenant_id]
    equals = dict(event_filter.equals)
    if (session := equals.pop("session", None)) is not None:
        conditions.append(RECEIPTS.c.session == session)
    if equals:
        holding = EventFilter(equals=equals, from_ms=event_filter.from_ms, to_ms=event_filter.to_ms)
        conditions.append(
            RECEIPTS.c.id.in_(
                holding.apply(select(EVENTS.c.receipt_id), tenant_id).where(
                    EVENTS.c.receipt_id.is_not(None)
                )
            )
        )
    if event_filter.from_ms is not None:
        conditions.append(RECEIPTS.c.last_event_ms >= event_filter.from_ms)
    if event_filter.to_ms is not None:
        conditions.append(RECEIPTS.c.first_event_ms < event_filter.to_ms)
    statement = _with_settlement(select(*_COLUMNS).select_from(RECEIPTS)).where(and_(*conditions))
    return newest_first(
        connection,
        statement,
        time_column=RECEIPTS.c.sealed_ms,
        key_column=RECEIPTS.c.id,
        limit=limit,
        cursor=cursor,
        render=receipt_json,
    )
