"""Anchoring on a real anvil in Tempo mode (``--network tempo --hardfork T4``, chain 42431):
anchors verify with ``p402 verify``; tampered bundles fail at their own check; a crash after
any persisted step, an RPC outage or a reorg never loses a batch nor anchors it twice."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
import time

import pytest
from click.testing import CliRunner
from eth_account import Account
from hexbytes import HexBytes
from sqlalchemy import select
from tests.settlement.conftest import DEV_KEY_0, TEMPO_TESTNET, Outage, event
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware

from p402.api.cli import main
from p402.settlement import merkle
from p402.settlement.anchoring import Anchorer, BatchState, form_batches, settle
from p402.settlement.canonical import canonical_bytes
from p402.settlement.chain import (
    ANCHOR_PREFIX,
    AnchorChain,
    Broadcast,
    ChainUnavailable,
    SignedTransaction,
    chain_from_environment,
    rpc_web3,
)
from p402.settlement.proofs import proof_bundle
from p402.settlement.receipts import SETTLEMENT_BATCHES
from p402.settlement.sealing import seal_session
from p402.settlement.verify import VerificationFailed, verify_bundle

DEV_ADDRESS_0 = Account.from_key(DEV_KEY_0).address
OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's key 1


def _seal_receipts(engine, tenant, sessions: int = 3) -> list[str]:
    receipts = []
    for _ in range(sessions):
        name = secrets.token_hex(4)
        tenant.ingest(engine, event(f"e-{name}", session=f"s-{name}"))
        receipt_id = seal_session(engine, tenant.id, f"s-{name}")
        assert receipt_id is not None
        receipts.append(receipt_id)
    return receipts


def _batches(engine):
    with engine.connect() as connection:
        return (
            connection.execute(select(SETTLEMENT_BATCHES).order_by(SETTLEMENT_BATCHES.c.seq))
            .mappings()
            .all()
        )


def _anchor_transactions(w3: Web3, submitter: str = DEV_ADDRESS_0) -> list[dict[str, object]]:
    """Every successful anchor transaction of ``submitter`` in the canonical chain."""
    found = []
    for number in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            data = bytes(tx["input"])
            if tx["from"] == submitter and data.startswith(ANCHOR_PREFIX):
                status = w3.eth.get_transaction_receipt(tx["hash"])["status"]
                if status == 1:
                    found.append({"root": data[len(ANCHOR_PREFIX) :].hex(), "tx": tx})
    return found


def _assert_each_batch_anchored_once(engine, w3: Web3) -> None:
    roots = [tx["root"] for tx in _anchor_transactions(w3)]
    batches = _batches(engine)
    assert batches, "no batch was formed"
    for batch in batches:
        assert batch["state"] == BatchState.FINAL
        assert roots.count(batch["root"]) == 1, f"batch {batch['seq']} anchored {roots}"
    assert len(roots) == len(batches)


def _bundle(engine, tenant_id: int, receipt_id: str) -> dict[str, object]:
    with engine.connect() as connection:
        bundle = proof_bundle(connection, tenant_id, receipt_id)
    assert bundle is not None
    return bundle


_RPC_ERROR = b'{"jsonrpc": "2.0", "id": 0, "error": {"code": -32601, "message": "no such method"}}'


def _verify_cli(tmp_path, bundle, rpc_url, *extra: str):
    path = tmp_path / f"bundle-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(bundle))
    return CliRunner().invoke(main, ["verify", str(path), "--rpc-url", rpc_url, *extra])


def test_a_receipt_is_anchored_on_tempo_anvil_and_verifies(engine, acme, chain_env, tmp_path):
    receipts = _seal_receipts(engine, acme)
    chain = chain_from_environment(chain_env)
    assert chain.chain_id == TEMPO_TESTNET

    report = settle(engine, chain)
    assert report.unavailable is None
    assert report.final == report.formed and len(report.formed) == 1
    [batch] = _batches(engine)
    assert batch["size"] == 3
    assert (batch["submitter"], batch["chain_id"], batch["method"]) == (
        DEV_ADDRESS_0,
        TEMPO_TESTNET,
        "calldata",
    )

    tx = chain.w3.eth.get_transaction(HexBytes(batch["tx_hash"]))
    assert tx["type"] == 2  # EIP-1559
    assert tx["value"] == 0  # Tempo has no native token
    assert tx["to"] == tx["from"] == DEV_ADDRESS_0
    assert bytes(tx["input"]) == ANCHOR_PREFIX + bytes.fromhex(batch["root"])
    receipt = chain.w3.eth.get_transaction_receipt(HexBytes(batch["tx_hash"]))
    assert receipt["gasUsed"] <= tx["gas"]  # estimated, not guessed
    assert (receipt["blockNumber"], "0x" + bytes(receipt["blockHash"]).hex()) == (
        batch["block_number"],
        batch["block_hash"],
    )

    for index, receipt_id in enumerate(receipts):
        bundle = _bundle(engine, acme.id, receipt_id)
        assert (bundle["leaf_index"], bundle["tree_size"], bundle["batch_seq"]) == (index, 3, 1)
        result = _verify_cli(tmp_path, bundle, chain_env["P402_CHAIN_RPC_URL"])
        assert result.exit_code == 0, result.output
        for check in ("receipt_hash", "audit_path", "transaction", "submitter", "finality"):
            assert f"PASS  {check}" in result.output
        assert "FAIL" not in result.output
    _assert_each_batch_anchored_once(engine, chain.w3)


def test_tampered_bundles_each_fail_at_their_own_check(
    engine, acme, chain_env, tmp_path, canned_server
):
    [receipt_id, *_] = _seal_receipts(engine, acme, sessions=2)
    chain = chain_from_environment(chain_env)
    settle(engine, chain)
    genuine = _bundle(engine, acme.id, receipt_id)
    rpc_url = chain_env["P402_CHAIN_RPC_URL"]

    changed_field = copy.deepcopy(genuine)
    changed_field["receipt"]["cost_usd"] = "0.000001"

    wrong_root = copy.deepcopy(genuine)
    wrong_root["root"] = hashlib.sha256(b"another root").hexdigest()

    # A self-consistent bundle (receipt, path and root agree) for a root never anchored.
    forged = copy.deepcopy(genuine)
    leaves = [bytes.fromhex(genuine["receipt_hash"]), hashlib.sha256(b"forged").digest()]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    forged.update(
        leaf_index=0,
        tree_size=2,
        audit_path=[node.hex() for node in merkle.audit_path(hashes, 0)],
        root=merkle.tree_hash(leaves).hex(),
    )

    other_submitter = copy.deepcopy(genuine)
    other_submitter["anchor"]["submitter"] = Account.from_key(OTHER_KEY).address

    # The same root sent again, but never mined.
    chain.w3.provider.make_request("evm_setAutomine", [False])
    pending = chain.sign_anchor(bytes.fromhex(genuine["root"]))
    assert chain.broadcast(pending.raw_tx) is Broadcast.SENT
    unmined = copy.deepcopy(genuine)
    unmined["anchor"]["tx_hash"] = pending.tx_hash

    unknown = copy.deepcopy(genuine)
    unknown["anchor"]["tx_hash"] = "0x" + "ab" * 32

    cases = [
        (changed_field, "receipt_hash"),
        (wrong_root, "audit_path"),
        (forged, "root_on_chain"),
        (other_submitter, "submitter"),
        (unmined, "transaction"),
        (unknown, "transaction"),
    ]
    for bundle, failing in cases:
        result = _verify_cli(tmp_path, bundle, rpc_url)
        assert result.exit_code == 1, (failing, result.output)
        assert f"FAIL  {failing}" in result.output
        assert f"verification FAILED: check {failing}" in result.output
        assert result.output.count("FAIL  ") == 1
        with pytest.raises(VerificationFailed) as failure:
            verify_bundle(bundle, chain.w3)
        assert failure.value.check.name == failing

    assert _verify_cli(tmp_path, genuine, rpc_url).exit_code == 0
    # Finality is a check of its own: more confirmations than the chain has yet.
    too_soon = _verify_cli(tmp_path, genuine, rpc_url, "--confirmations", "50")
    assert too_soon.exit_code == 1
    assert "FAIL  finality" in too_soon.output
    # anvil's "finalized" block trails its head: asking for it fails a fresh anchor.
    finalized = chain.w3.eth.get_block("finalized")["number"]
    assert finalized < genuine["anchor"]["block_number"]
    by_tag = _verify_cli(tmp_path, genuine, rpc_url, "--require-finalized")
    assert by_tag.exit_code == 1
    assert f"the node's finalized block is {finalized}" in by_tag.output
    # Not a bundle at all.
    broken = _verify_cli(tmp_path, {"receipt": {}}, rpc_url)
    assert broken.exit_code == 2
    # Not even text.
    binary = tmp_path / "bundle.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = CliRunner().invoke(main, ["verify", str(binary), "--rpc-url", rpc_url])
    assert unreadable.exit_code == 2, unreadable.output
    assert "not a proof bundle" in unreadable.output
    # Something answers, but not as a node of the chain.
    for answer in (b"<html>a web page</html>", _RPC_ERROR):
        not_a_node = canned_server(200, {"content-type": "application/json"}, answer)
        result = _verify_cli(tmp_path, genuine, not_a_node)
        assert result.exit_code == 3, result.output
        assert f"no usable chain node at {not_a_node}" in result.output
    # No node to ask: an unset variable, or the embedded chain's name.
    for nowhere in ("", "embedded"):
        unanswerable = _verify_cli(tmp_path, genuine, nowhere)
        assert unanswerable.exit_code == 2
        assert "--rpc-url" in unanswerable.output and "names no node" in unanswerable.output


def _anchored_by(chain: AnchorChain, bundle: dict, tx_hash: str) -> dict:
    """``bundle`` with the anchor ``tx_hash`` names (block and sender read off the chain)."""
    mined = chain.w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=10)
    sent = chain.w3.eth.get_transaction(HexBytes(tx_hash))
    return {
        **bundle,
        "anchor": {
            **bundle["anchor"],
            "tx_hash": tx_hash,
            "block_number": mined["blockNumber"],
            "block_hash": "0x" + bytes(mined["blockHash"]).hex(),
            "submitter": sent["from"],
        },
    }


def test_a_receipt_anchored_by_another_key_fails_once_the_issuer_is_pinned(
    engine, acme, chain_env, tmp_path
):
    [receipt_id] = _seal_receipts(engine, acme, sessions=1)
    chain = chain_from_environment(chain_env)
    settle(engine, chain)
    genuine = _bundle(engine, acme.id, receipt_id)
    rpc_url = chain_env["P402_CHAIN_RPC_URL"]

    # A receipt made up, alone in its tree, anchored by a key of the forger's naming itself.
    made_up = copy.deepcopy(genuine)
    made_up["receipt"]["cost_usd"] = "0"
    receipt_hash = hashlib.sha256(canonical_bytes(made_up["receipt"])).digest()
    root = merkle.tree_hash([receipt_hash])
    made_up.update(
        receipt_hash=receipt_hash.hex(), leaf_index=0, tree_size=1, audit_path=[], root=root.hex()
    )
    forger = chain_from_environment({**chain_env, "P402_CHAIN_PRIVATE_KEY": OTHER_KEY})
    anchor = forger.sign_anchor(root)
    assert forger.broadcast(anchor.raw_tx) is Broadcast.SENT
    forged = _anchored_by(forger, made_up, anchor.tx_hash)

    unpinned = _verify_cli(tmp_path, forged, rpc_url)
    assert unpinned.exit_code == 0, unpinned.output  # the bundle's word is all it has
    assert "not pinned" in unpinned.output
    pinned = _verify_cli(tmp_path, forged, rpc_url, "--submitter", DEV_ADDRESS_0)
    assert pinned.exit_code == 1, pinned.output
    assert f"not by the pinned submitter {DEV_ADDRESS_0}" in pinned.output
    with pytest.raises(VerificationFailed) as failure:
        verify_bundle(forged, chain.w3, submitter=DEV_ADDRESS_0)
    assert failure.value.check.name == "submitter"

    # The issuer's own key, but not an anchor: the root sent to another address.
    elsewhere = chain.w3.eth.send_transaction(
        {
            "from": DEV_ADDRESS_0,
            "to": Account.from_key(OTHER_KEY).address,
            "value": 0,
            "data": ANCHOR_PREFIX + root,
        }
    )
    misdirected = _anchored_by(chain, made_up, "0x" + bytes(elsewhere).hex())
    result = _verify_cli(tmp_path, misdirected, rpc_url, "--submitter", DEV_ADDRESS_0)
    assert result.exit_code == 1, result.output
    assert "FAIL  submitter" in result.output and "an anchor is sent to its sender" in result.output

    trusted = _verify_cli(tmp_path, genuine, rpc_url, "--submitter", DEV_ADDRESS_0.lower())
    assert trusted.exit_code == 0, trusted.output
    assert "the pinned submitter" in trusted.output
    not_an_address = _verify_cli(tmp_path, genuine, rpc_url, "--submitter", "0x1234")
    assert not_an_address.exit_code == 2
    assert "is not an address" in not_an_address.output


class _CrashAfterSending(AnchorChain):
    """A process killed right after the node accepted the transaction, before the database
    recorded it."""

    def broadcast(self, raw_tx: str) -> Broadcast:
        super().broadcast(raw_tx)
        raise KeyboardInterrupt("killed after sending")


class _CrashAfterSigning(AnchorChain):
    """A process killed after signing, before the signed transaction was saved."""

    def sign_anchor(self, root: bytes) -> SignedTransaction:
        super().sign_anchor(root)
        raise KeyboardInterrupt("killed after signing")


def test_a_machine_restarted_after_any_step_anchors_each_batch_exactly_once(
    engine, acme, chain_env
):
    _seal_receipts(engine, acme, sessions=2)
    [batch_id] = form_batches(engine)

    def fresh_machine(kind: type[AnchorChain] = AnchorChain) -> Anchorer:
        """A new process: nothing but the database carries over."""
        base = chain_from_environment(chain_env)
        return Anchorer(engine, kind(base.w3, base.account))

    with pytest.raises(KeyboardInterrupt):
        fresh_machine(_CrashAfterSigning).step(batch_id)
    assert _batches(engine)[0]["state"] == BatchState.SEALED

    assert fresh_machine().step(batch_id) is BatchState.SIGNED
    signed = _batches(engine)[0]
    assert signed["raw_tx"] and signed["tx_hash"] and signed["nonce"] is not None

    with pytest.raises(KeyboardInterrupt):  # sent, but the database still says "signed"
        fresh_machine(_CrashAfterSending).step(batch_id)
    assert _batches(engine)[0]["state"] == BatchState.SIGNED

    # Restarting rebroadcasts the same bytes; the node already has (and mined) them.
    assert fresh_machine().step(batch_id) is BatchState.BROADCAST
    assert fresh_machine().step(batch_id) is BatchState.INCLUDED
    assert fresh_machine().step(batch_id) is BatchState.FINAL
    assert fresh_machine().step(batch_id) is BatchState.FINAL
    final = _batches(engine)[0]
    assert final["tx_hash"] == signed["tx_hash"]  # the transaction signed before the crash
    assert final["reanchors"] == 0

    # A second batch, interrupted at every step by a fresh machine, in the same chain.
    _seal_receipts(engine, acme, sessions=1)
    [second] = form_batches(engine)
    states = [fresh_machine().step(second) for _ in range(4)]
    assert states == [
        BatchState.SIGNED,
        BatchState.BROADCAST,
        BatchState.INCLUDED,
        BatchState.FINAL,
    ]
    _assert_each_batch_anchored_once(engine, chain_from_environment(chain_env).w3)


def test_concurrent_settlers_anchor_each_batch_once(engine, acme, chain_env):
    _seal_receipts(engine, acme, sessions=3)
    form_batches(engine)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            settle(engine, chain_from_environment(chain_env))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    settle(engine, chain_from_environment(chain_env))
    _assert_each_batch_anchored_once(engine, chain_from_environment(chain_env).w3)


def test_an_rpc_outage_delays_anchoring_and_loses_nothing(engine, acme, anvil):
    outage = Outage(anvil.port).up()
    env = {"P402_CHAIN_RPC_URL": outage.url, "P402_CHAIN_PRIVATE_KEY": DEV_KEY_0}
    chain = chain_from_environment(env)
    chain.w3.provider.exception_retry_configuration.retries = 2  # keep the test short
    _seal_receipts(engine, acme, sessions=1)

    outage.down()
    report = settle(engine, chain)
    assert report.unavailable is not None
    [batch] = _batches(engine)
    assert batch["state"] == BatchState.SEALED
    assert "cannot be reached" in batch["last_error"]

    outage.up()
    Anchorer(engine, chain).step(batch["id"])  # signed and saved…
    outage.down()
    report = settle(engine, chain)  # …then the node is gone before it is sent
    assert report.unavailable is not None
    assert _batches(engine)[0]["state"] == BatchState.SIGNED

    outage.up()
    report = settle(engine, chain)
    assert report.unavailable is None
    assert _batches(engine)[0]["last_error"] is None
    _assert_each_batch_anchored_once(engine, chain.w3)
    outage.down()


def test_the_rpc_client_retries_a_refused_connection(anvil):
    outage = Outage(anvil.port)  # down: connections are refused

    threading.Timer(0.6, outage.up).start()
    w3 = rpc_web3(outage.url, retries=6, backoff_seconds=0.2)
    started = time.monotonic()
    assert w3.eth.chain_id == TEMPO_TESTNET  # refused, retried, answered
    assert time.monotonic() - started >= 0.5
    outage.down()

    refused = AnchorChain(rpc_web3(outage.url, retries=2, backoff_seconds=0.05), Account.create())
    with pytest.raises(ChainUnavailable):
        refused.latest_block()
    # web3's own default retries only the builtin ConnectionError, which requests never raises.
    bare = Web3(HTTPProvider(outage.url))
    with pytest.raises(Exception, match=r"Connection refused|Max retries") as raised:
        bare.eth.chain_id  # noqa: B018
    assert not isinstance(raised.value, ChainUnavailable)


def test_the_poa_middleware_sits_at_layer_0(anvil):
    w3 = rpc_web3(anvil.url)
    # ``middleware`` lists the onion from the innermost layer out: layer 0 comes last.
    assert w3.middleware_onion.middleware[-1][0] is ExtraDataToPOAMiddleware
    block = w3.eth.get_block("latest")
    assert "proofOfAuthorityData" in block  # extraData of any length is accepted


def test_a_reorged_anchor_is_detected_and_anchored_again_once(engine, acme, chain_env):
    [receipt_id, *_] = _seal_receipts(engine, acme, sessions=2)
    chain = chain_from_environment({**chain_env, "P402_CHAIN_CONFIRMATIONS": "3"})
    report = settle(engine, chain)
    [batch] = _batches(engine)
    assert report.states == {batch["id"]: BatchState.INCLUDED}  # 1 of 3 confirmations
    first_tx, first_block = batch["tx_hash"], batch["block_hash"]

    # The block holding the anchor is replaced by an empty one.
    chain.w3.provider.make_request("anvil_reorg", [1, []])
    assert chain.inclusion(first_tx) is None

    settle(engine, chain)
    again = _batches(engine)[0]
    assert again["state"] == BatchState.INCLUDED
    assert again["reanchors"] == 1
    assert json.loads(again["superseded_tx"]) == [first_tx]
    assert again["block_hash"] != first_block

    chain.w3.provider.make_request("anvil_mine", [2])
    settle(engine, chain)
    assert _batches(engine)[0]["state"] == BatchState.FINAL
    _assert_each_batch_anchored_once(engine, chain.w3)
    bundle = _bundle(engine, acme.id, receipt_id)
    assert verify_bundle(bundle, chain.w3, confirmations=3)[-1].name == "finality"


def test_the_submitter_key_can_come_from_a_keystore(tmp_path, anvil):
    keystore = tmp_path / "submitter.json"
    keystore.write_text(
        json.dumps(Account.encrypt(DEV_KEY_0, "correct horse", kdf="pbkdf2", iterations=1024))
    )
    env = {"P402_CHAIN_RPC_URL": anvil.url, "P402_CHAIN_KEYSTORE": str(keystore)}
    with pytest.raises(ValueError, match="P402_CHAIN_KEYSTORE_PASSWORD"):
        chain_from_environment(env)
    with pytest.raises(ValueError, match="cannot open the keystore"):
        chain_from_environment({**env, "P402_CHAIN_KEYSTORE_PASSWORD": "wrong"})
    chain = chain_from_environment({**env, "P402_CHAIN_KEYSTORE_PASSWORD": "correct horse"})
    assert chain.submitter == DEV_ADDRESS_0
    with pytest.raises(ValueError, match="P402_CHAIN_PRIVATE_KEY or"):
        chain_from_environment({"P402_CHAIN_RPC_URL": anvil.url})


def test_a_transaction_the_node_refuses_keeps_its_batch_for_later(engine, acme, anvil, chain_env):
    _seal_receipts(engine, acme, sessions=1)
    unfunded = AnchorChain(rpc_web3(anvil.url), Account.create())  # no fee token to pay with
    for _ in range(2):  # refused again and again: never dropped, never signed anew
        report = settle(engine, unfunded)
        assert report.refused is not None
        [batch] = _batches(engine)
        assert batch["state"] == BatchState.SIGNED
        assert batch["last_error"].startswith("the node refused")
        assert batch["reanchors"] == 0

    # The operator configures a funded key: the batch is signed again with it.
    funded = chain_from_environment(chain_env)
    report = settle(engine, funded)
    assert report.refused is None
    [batch] = _batches(engine)
    assert (batch["submitter"], batch["reanchors"]) == (DEV_ADDRESS_0, 1)
    _assert_each_batch_anchored_once(engine, funded.w3)
