"""Proof bundles: everything needed to check one receipt against the chain, and nothing else.

::

    {"receipt": {...}, "receipt_hash": "…", "leaf_index": 3, "tree_size": 8,
     "audit_path": ["…", …], "root": "…", "batch_seq": 12,
     "anchor": {"chain_id": 42431, "tx_hash": "0x…", "block_number": 123,
                "block_hash": "0x…", "submitter": "0x…", "method": "calldata"}}

``receipt`` is the sealed receipt body itself; hashes are hex (``audit_path``, ``root`` and
``receipt_hash`` without a prefix, chain values ``0x``-prefixed as JSON-RPC writes them).
:mod:`p402.settlement.verify` checks a bundle with nothing but an RPC URL.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from p402.settlement import merkle
from p402.settlement.receipts import RECEIPTS, SETTLEMENT_BATCHES, SETTLEMENT_LEAVES

__all__ = ["NotAnchored", "proof_bundle"]


class NotAnchored(LookupError):
    """The receipt is sealed but its batch is not final on chain yet."""

    def __init__(self, receipt_id: str, state: str | None) -> None:
        where = "it is not in a batch yet" if state is None else f"its batch is {state}"
        super().__init__(f"receipt {receipt_id} is not anchored yet: {where}")
        self.state = state


def proof_bundle(connection: Connection, tenant_id: int, receipt_id: str) -> dict[str, Any] | None:
    """The proof bundle of one of the tenant's receipts; ``None`` for an unknown id or another
    tenant's; :class:`NotAnchored` while its batch is not final."""
    row = (
        connection.execute(
            select(
                RECEIPTS.c.body,
                RECEIPTS.c.receipt_hash,
                SETTLEMENT_LEAVES.c.leaf_index,
                SETTLEMENT_BATCHES,
            )
            .select_from(RECEIPTS)
            .outerjoin(SETTLEMENT_LEAVES, SETTLEMENT_LEAVES.c.receipt_id == RECEIPTS.c.id)
            .outerjoin(SETTLEMENT_BATCHES, SETTLEMENT_BATCHES.c.id == SETTLEMENT_LEAVES.c.batch_id)
            .where(RECEIPTS.c.tenant_id == tenant_id, RECEIPTS.c.id == receipt_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["state"] != "final":
        raise NotAnchored(receipt_id, row["state"])
    leaves = connection.execute(
        select(RECEIPTS.c.receipt_hash)
        .join(SETTLEMENT_LEAVES, SETTLEMENT_LEAVES.c.receipt_id == RECEIPTS.c.id)
        .where(SETTLEMENT_LEAVES.c.batch_id == row["id"])
        .order_by(SETTLEMENT_LEAVES.c.leaf_index)
    ).scalars()
    leaf_hashes = [merkle.leaf_hash(bytes.fromhex(value)) for value in leaves]
    if merkle.tree_hash_of_leaf_hashes(leaf_hashes).hex() != row["root"]:
        raise RuntimeError(f"batch {row['id']} no longer matches its root")  # never expected
    return {
        "receipt": json.loads(row["body"]),
        "receipt_hash": row["receipt_hash"],
        "leaf_index": row["leaf_index"],
        "tree_size": row["size"],
        "audit_path": [node.hex() for node in merkle.audit_path(leaf_hashes, row["leaf_index"])],
        "root": row["root"],
        "batch_seq": row["seq"],
        "anchor": {
            "chain_id": row["chain_id"],
            "tx_hash": row["tx_hash"],
            "block_number": row["block_number"],
            "block_hash": row["block_hash"],
            "submitter": row["submitter"],
            "method": row["method"],
        },
    }
