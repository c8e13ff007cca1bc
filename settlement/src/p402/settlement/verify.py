"""Verifying a receipt's proof bundle against the chain, trusting nothing but the chain node.

Needs only the bundle (:mod:`p402.settlement.proofs`) and a JSON-RPC URL: no ledger, no
P402 server. The checks, in order, each stopping the verification when it fails:

1. ``receipt_hash``: SHA-256 of the receipt's RFC 8785 bytes equals ``receipt_hash``.
2. ``audit_path``: the RFC 6962 audit path leads from that leaf to ``root``. That proves
   the receipt is in the tree; its ``leaf_index`` and ``tree_size`` are the bundle's
   numbering, which the chain does not record (another numbering can fit the same path).
3. ``chain``: the node serves the chain of ``anchor.chain_id``.
4. ``transaction``: the anchor transaction exists and is mined.
5. ``status``: the transaction succeeded (status 1).
6. ``submitter``: it was sent by ``anchor.submitter`` to itself, as anchors are; and, when
   the caller pins the address its receipts' issuer anchors from, by that address. The
   bundle names its submitter itself: without a pinned address, anyone who can send a
   transaction could anchor a receipt they made up and name themselves.
7. ``root_on_chain``: its calldata carries ``root`` (``b"P402"`` + the 32-byte root).
8. ``block``: it is in block ``anchor.block_number`` whose hash is ``anchor.block_hash``,
   and that block is in the node's canonical chain.
9. ``finality``: the block has the required confirmations (default 1: Tempo's finality is
   deterministic), and, when asked, is covered by the node's ``finalized`` tag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3Exception
from web3.types import TxData, TxReceipt

from p402.settlement import merkle
from p402.settlement.canonical import canonical_bytes
from p402.settlement.chain import ANCHOR_PREFIX, METHOD_CALLDATA

__all__ = [
    "CHECKS",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "Check",
    "InvalidBundle",
    "VerificationFailed",
    "verify_bundle",
    "verify_command",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed
EXIT_INVALID = 2  # the bundle is not a well-formed proof bundle
EXIT_UNREACHABLE = 3  # the node cannot be reached

CHECKS = (
    "receipt_hash",
    "audit_path",
    "chain",
    "transaction",
    "status",
    "submitter",
    "root_on_chain",
    "block",
    "finality",
)


class InvalidBundle(ValueError):
    """The bundle lacks a field or holds a malformed value."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


class VerificationFailed(Exception):
    """A check failed: ``check`` names it."""

    def __init__(self, check: Check) -> None:
        super().__init__(f"{check.name}: {check.detail}")
        self.check = check


def _hex_bytes(value: object, name: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidBundle(f"{name} must be a hex string")
    try:
        data = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise InvalidBundle(f"{name} is not hex: {value!r}") from None
    if length is not None and len(data) != length:
        raise InvalidBundle(f"{name} must be {length} bytes, not {len(data)}")
    return data


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBundle(f"{name} must be an integer")
    return value


def _field(mapping: Mapping[str, Any], name: str, prefix: str = "") -> Any:
    if name not in mapping:
        raise InvalidBundle(f"the bundle has no {prefix}{name}")
    return mapping[name]


def _transaction(w3: Web3, tx_hash: bytes) -> TxData | None:
    try:
        return w3.eth.get_transaction(HexBytes(tx_hash))
    except TransactionNotFound:
        return None


def _receipt(w3: Web3, tx_hash: bytes) -> TxReceipt | None:
    try:
        return w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None


def verify_bundle(
    bundle: Mapping[str, Any],
    w3: Web3,
    *,
    confirmations: int = 1,
    require_finalized_tag: bool = False,
    submitter: str | None = None,
    report: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Run every check on ``bundle`` against the node of ``w3``; the passed checks.

    ``submitter``: the address the receipts' issuer anchors from, if the caller knows it.

    Raises :class:`VerificationFailed` naming the first failed check (after reporting it),
    and :class:`InvalidBundle` for a bundle that is not well formed.
    """
    passed: list[Check] = []

    def fail(name: str, detail: str) -> NoReturn:
        check = Check(name, False, detail)
        if report is not None:
            report(check)
        raise VerificationFailed(check)

    def record(name: str, ok: bool, detail: str) -> None:
        if not ok:
            fail(name, detail)
        check = Check(name, True, detail)
        if report is not None:
            report(check)
        passed.append(check)

    receipt = _field(bundle, "receipt")
    if not isinstance(receipt, Mapping):
        raise InvalidBundle("receipt must be a JSON object")
    claimed_hash = _hex_bytes(_field(bundle, "receipt_hash"), "receipt_hash", 32)
    leaf_index = _integer(_field(bundle, "leaf_index"), "leaf_index")
    tree_size = _integer(_field(bundle, "tree_size"), "tree_size")
    path_values = _field(bundle, "audit_path")
    if not isinstance(path_values, list):
        raise InvalidBundle("audit_path must be a list of hex strings")
    path = [_hex_bytes(node, "audit_path entry", 32) for node in path_values]
    root = _hex_bytes(_field(bundle, "root"), "root", 32)
    anchor = _field(bundle, "anchor")
    if not isinstance(anchor, Mapping):
        raise InvalidBundle("anchor must be a JSON object")
    chain_id = _integer(_field(anchor, "chain_id", "anchor."), "anchor.chain_id")
    tx_hash = _hex_bytes(_field(anchor, "tx_hash", "anchor."), "anchor.tx_hash", 32)
    block_number = _integer(_field(anchor, "block_number", "anchor."), "anchor.block_number")
    block_hash = _hex_bytes(_field(anchor, "block_hash", "anchor."), "anchor.block_hash", 32)
    named = _field(anchor, "submitter", "anchor.")
    if not isinstance(named, str) or not Web3.is_address(named):
        raise InvalidBundle("anchor.submitter must be an address")
    if submitter is not None and not Web3.is_address(submitter):
        raise ValueError(f"the pinned submitter {submitter!r} is not an address")
    method = anchor.get("method", METHOD_CALLDATA)
    if method != METHOD_CALLDATA:
        raise InvalidBundle(f"anchor.method {method!r} is not one this verifier knows")

    computed = hashlib.sha256(canonical_bytes(receipt)).digest()
    record(
        "receipt_hash",
        computed == claimed_hash,
        f"SHA-256 of the receipt's RFC 8785 bytes is {computed.hex()}"
        + ("" if computed == claimed_hash else f", not {claimed_hash.hex()}"),
    )
    reached = merkle.root_from_path(merkle.leaf_hash(claimed_hash), leaf_index, tree_size, path)
    record(
        "audit_path",
        reached == root,
        f"the receipt's leaf leads to root {root.hex()}, as leaf {leaf_index} of {tree_size} "
        "by the bundle's numbering"
        if reached == root
        else f"leaf {leaf_index} of {tree_size} with this path does not lead to root {root.hex()}",
    )
    node_chain = int(w3.eth.chain_id)
    record(
        "chain",
        node_chain == chain_id,
        f"the node serves chain {node_chain}"
        + ("" if node_chain == chain_id else f", not {chain_id}"),
    )
    shown_tx = "0x" + tx_hash.hex()
    transaction = _transaction(w3, tx_hash)
    if transaction is None:
        fail("transaction", f"{shown_tx} is unknown to the node")
    tx_receipt = _receipt(w3, tx_hash)
    if tx_receipt is None or transaction.get("blockNumber") is None:
        fail("transaction", f"{shown_tx} is pending: it is not mined")
    record("transaction", True, f"{shown_tx} is mined")
    record(
        "status",
        tx_receipt["status"] == 1,
        f"transaction status is {tx_receipt['status']}"
        + (" (success)" if tx_receipt["status"] == 1 else " (reverted)"),
    )
    sender = str(transaction["from"])
    recipient = str(transaction.get("to"))
    if sender.lower() != named.lower():
        fail("submitter", f"sent by {sender}, not {named}")
    if recipient.lower() != sender.lower():
        fail("submitter", f"sent by {sender} to {recipient}: an anchor is sent to its sender")
    if submitter is None:
        record(
            "submitter",
            True,
            f"sent by {sender} to itself; that address is the bundle's word (not pinned: "
            "--submitter names the address the receipts' issuer anchors from)",
        )
    else:
        record(
            "submitter",
            sender.lower() == submitter.lower(),
            f"sent by {sender} to itself, the pinned submitter"
            if sender.lower() == submitter.lower()
            else f"sent by {sender}, not by the pinned submitter {submitter}",
        )
    calldata = bytes(transaction.get("input", b""))
    record(
        "root_on_chain",
        calldata == ANCHOR_PREFIX + root,
        "the calldata carries the root"
        if calldata == ANCHOR_PREFIX + root
        else f"the calldata (0x{calldata.hex()}) does not carry root {root.hex()}",
    )
    included_hash = bytes(tx_receipt["blockHash"])
    included_number = int(tx_receipt["blockNumber"])
    try:
        canonical_hash = bytes(w3.eth.get_block(included_number)["hash"])
    except BlockNotFound:
        canonical_hash = b""
    in_block = included_number == block_number and included_hash == block_hash
    record(
        "block",
        in_block and canonical_hash == block_hash,
        f"in block {included_number} (0x{included_hash.hex()}) of the canonical chain"
        if in_block and canonical_hash == block_hash
        else f"the transaction is in block {included_number} (0x{included_hash.hex()}), "
        f"the bundle says block {block_number} (0x{block_hash.hex()})",
    )
    latest = int(w3.eth.block_number)
    depth = latest - block_number + 1
    final = depth >= confirmations
    detail = f"{depth} confirmation(s), {confirmations} required"
    if require_finalized_tag:
        finalized = int(w3.eth.get_block("finalized")["number"])
        final = final and finalized >= block_number
        detail += f"; the node's finalized block is {finalized}"
    record("finality", final, detail)
    return passed


def verify_command(
    bundle_text: str | bytes,
    rpc_url: str,
    *,
    confirmations: int = 1,
    require_finalized_tag: bool = False,
    submitter: str | None = None,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """``p402 verify``: check a bundle (JSON text, or its bytes) against the node at
    ``rpc_url``, printing each check as it goes with ``out`` and the verdict with ``err``; the
    exit status."""
    from p402.settlement.chain import rpc_web3

    try:
        bundle = json.loads(bundle_text)
    except ValueError as error:
        err(f"not a proof bundle: the file is not JSON ({error})")
        return EXIT_INVALID
    if not isinstance(bundle, Mapping):
        err("not a proof bundle: expected a JSON object")
        return EXIT_INVALID
    w3 = rpc_web3(rpc_url, retries=3)

    def show(check: Check) -> None:
        out(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<14} {check.detail}")

    try:
        verify_bundle(
            bundle,
            w3,
            confirmations=confirmations,
            require_finalized_tag=require_finalized_tag,
            submitter=submitter,
            report=show,
        )
    except InvalidBundle as error:
        err(f"not a proof bundle: {error}")
        return EXIT_INVALID
    except VerificationFailed as failure:
        err(f"verification FAILED: check {failure.check.name}: {failure.check.detail}")
        return EXIT_FAILED
    except requests.exceptions.RequestException as error:
        err(f"cannot reach the chain node at {rpc_url}: {error}")
        return EXIT_UNREACHABLE
    except (ValueError, Web3Exception) as error:  # an answer that is not a node's
        err(f"no usable chain node at {rpc_url}: it answered {type(error).__name__}: {error}")
        return EXIT_UNREACHABLE
    receipt = bundle.get("receipt", {})
    err(
        f"receipt {receipt.get('receipt_id', '?')} verified: anchored in block "
        f"{bundle['anchor']['block_number']} of chain {bundle['anchor']['chain_id']}"
    )
    return EXIT_OK
