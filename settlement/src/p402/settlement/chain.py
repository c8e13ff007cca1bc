"""The chain that receipt roots are anchored on: a Tempo-compatible EVM node over JSON-RPC, or
an in-process EVM (the ``embedded`` default).

An anchor is a plain EIP-1559 transaction from the submitter to itself, ``value`` 0, whose
calldata is ``b"P402"`` followed by the 32-byte root (:data:`ANCHOR_PREFIX`). Tempo accepts
EIP-1559 transactions; it has no native token, charges fees in a USD stablecoin and requires
``value`` 0. Gas is always estimated (a key's first transaction and new storage cost far
more on Tempo than on Ethereum).

Configuration (environment):

- ``P402_CHAIN_RPC_URL``: the node (Tempo mainnet, chain id 4217; testnet Moderato, 42431;
  or any EVM node). Unset, empty or ``embedded``: the in-process EVM of ``web3[tester]``.
  It lives in the P402 process and is **ephemeral**: its anchors vanish when the process
  stops, so it only shows the mechanism (the demo, tests).
- ``P402_CHAIN_PRIVATE_KEY``: the submitter's key (hex), or ``P402_CHAIN_KEYSTORE``: an
  Ethereum keystore (V3 JSON) file, decrypted with ``P402_CHAIN_KEYSTORE_PASSWORD``.
- ``P402_CHAIN_CONFIRMATIONS``: blocks (the inclusion block counting as one) after which an
  anchor is final; default 1, because Tempo has deterministic finality: a block is final
  once produced. Raise it for chains with probabilistic finality.

The HTTP provider retries refused connections and timeouts (web3's default retry lists the
builtin ``ConnectionError``, which ``requests`` does not raise), and the PoA middleware is
injected at layer 0 because Tempo blocks carry up to 10 KiB of ``extraData``.

Errors: :class:`ChainError` is the base; :class:`ChainUnavailable` (also a
``ConnectionError``) means the node cannot be reached, and callers retry later;
:class:`ChainConfigError` (also a ``ValueError``) is a configuration mistake;
:class:`BroadcastRejected` is a node refusing a transaction for another reason.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration
from web3.types import TxParams, Wei

from p402.settlement._recursion import recursion_limit_kept

__all__ = [
    "ANCHOR_PREFIX",
    "METHOD_CALLDATA",
    "AnchorChain",
    "Broadcast",
    "BroadcastRejected",
    "ChainConfigError",
    "ChainError",
    "ChainUnavailable",
    "Inclusion",
    "SignedTransaction",
    "chain_from_environment",
    "check_chain_settings",
    "embedded_chain",
    "rpc_web3",
]

ANCHOR_PREFIX: Final = b"P402"
"""The four bytes ahead of the 32-byte root in an anchor transaction's calldata."""
METHOD_CALLDATA: Final = "calldata"
"""How the root is carried: in the calldata of a transaction to the submitter itself."""
EMBEDDED: Final = "embedded"

_RETRYABLE: Final = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class ChainError(Exception):
    """Base of the errors of the chain backend."""


class ChainUnavailable(ChainError, ConnectionError):
    """The node cannot be reached (after retries): try again later, nothing is lost."""


class ChainConfigError(ChainError, ValueError):
    """The chain configuration is incomplete or wrong."""


class BroadcastRejected(ChainError, RuntimeError):
    """The node refused a transaction, for a reason other than already having it."""


class Broadcast(StrEnum):
    """What became of sending a signed transaction."""

    SENT = "sent"
    KNOWN = "known"  # the node already has it (in its pool or in a block)
    NONCE_USED = "nonce_used"  # its nonce is taken: by this very transaction, or another


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    raw_tx: str  # 0x-prefixed hex of the signed transaction
    tx_hash: str  # 0x-prefixed hex
    nonce: int


@dataclass(frozen=True, slots=True)
class Inclusion:
    block_number: int
    block_hash: str  # 0x-prefixed hex
    status: int  # 1 success, 0 reverted


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reachable(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn a node that cannot be reached into :class:`ChainUnavailable`."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except requests.exceptions.RequestException as error:
            raise ChainUnavailable(f"the chain node cannot be reached: {error}") from error

    return wrapper


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _rpc_message(error: Exception) -> str:
    if isinstance(error, Web3RPCError) and isinstance(error.rpc_response, Mapping):
        detail = error.rpc_response.get("error")
        if isinstance(detail, Mapping):
            return str(detail.get("message", error))
    return str(error)


_KNOWN_MARKERS: Final = ("already known", "known transaction", "alreadyknown", "already imported")
_NONCE_MARKERS: Final = (
    "nonce too low",
    "invalid transaction nonce",
    "nonce is too low",
    "oldnonce",
)


class AnchorChain:
    """Signs, sends and looks up anchor transactions for one submitter key on one chain."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        confirmations: int = 1,
        backend: str = "rpc",
    ) -> None:
        if confirmations < 1:
            raise ChainConfigError("confirmations must be at least 1 (the inclusion block)")
        self.w3 = w3
        self.account = account
        self.confirmations = confirmations
        self.backend = backend
        self.method = METHOD_CALLDATA
        self._chain_id: int | None = None

    @property
    def submitter(self) -> str:
        return str(self.account.address)

    @property
    @_reachable
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    @staticmethod
    def anchor_calldata(root: bytes) -> bytes:
        if len(root) != 32:
            raise ValueError("a Merkle root is 32 bytes")
        return ANCHOR_PREFIX + root

    @_reachable
    def sign_anchor(self, root: bytes) -> SignedTransaction:
        """A signed EIP-1559 transaction carrying ``root``, with the account's next nonce
        (pending transactions included) and estimated gas. Nothing is sent."""
        eth = self.w3.eth
        data = self.anchor_calldata(root)
        call: TxParams = {
            "from": self.account.address,
            "to": self.account.address,
            "value": Wei(0),
            "data": HexBytes(data),
        }
        gas = eth.estimate_gas(call)
        base_fee = int(eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        priority_fee = int(eth.max_priority_fee)
        nonce = eth.get_transaction_count(self.account.address, "pending")
        transaction: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": self.account.address,
            "value": 0,
            "data": HexBytes(data),
            "gas": gas,
            "maxPriorityFeePerGas": priority_fee,
            "maxFeePerGas": 2 * base_fee + priority_fee,
        }
        signed = self.account.sign_transaction(transaction)
        return SignedTransaction(_hex(signed.raw_transaction), _hex(signed.hash), nonce)

    @_reachable
    def broadcast(self, raw_tx: str) -> Broadcast:
        """Send a signed transaction; sending one the node already has is not an error."""
        try:
            self.w3.eth.send_raw_transaction(HexBytes(raw_tx))
        except requests.exceptions.RequestException:
            raise
        except Exception as error:  # node-specific exception types for one JSON-RPC error
            message = _rpc_message(error).lower()
            if any(marker in message for marker in _KNOWN_MARKERS):
                return Broadcast.KNOWN
            if any(marker in message for marker in _NONCE_MARKERS):
                return Broadcast.NONCE_USED
            raise BroadcastRejected(_rpc_message(error)) from error
        return Broadcast.SENT

    @_reachable
    def inclusion(self, tx_hash: str) -> Inclusion | None:
        """Where the transaction was included in the canonical chain, or ``None``."""
        try:
            receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None
        if receipt is None or receipt.get("blockNumber") is None:
            return None
        return Inclusion(
            int(receipt["blockNumber"]), _hex(receipt["blockHash"]), int(receipt["status"])
        )

    @_reachable
    def is_known(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction at all (pending or included)."""
        try:
            return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
        except TransactionNotFound:
            return False

    @_reachable
    def latest_block(self) -> int:
        return int(self.w3.eth.block_number)

    @_reachable
    def confirmed_nonce(self) -> int:
        """The number of the account's transactions in the latest block."""
        return int(self.w3.eth.get_transaction_count(self.account.address, "latest"))


def rpc_web3(
    url: str, *, retries: int = 5, backoff_seconds: float = 0.25, timeout_seconds: float = 10.0
) -> Web3:
    """A web3 client for a JSON-RPC node: refused connections and timeouts retried with
    exponential backoff, PoA ``extraData`` accepted (layer 0)."""
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": timeout_seconds},
        exception_retry_configuration=ExceptionRetryConfiguration(
            errors=_RETRYABLE, retries=retries, backoff_factor=backoff_seconds
        ),
    )
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def embedded_chain(*, confirmations: int = 1) -> AnchorChain:
    """A fresh in-process EVM (py-evm) and its first funded account: ephemeral."""
    with recursion_limit_kept():  # py-evm, imported by the provider, raises it
        from web3 import EthereumTesterProvider

        provider = EthereumTesterProvider()
    tester = provider.ethereum_tester
    assert tester is not None
    key = tester.backend.account_keys[0]
    account = cast(LocalAccount, Account.from_key(key.to_bytes()))
    return AnchorChain(Web3(provider), account, confirmations=confirmations, backend=EMBEDDED)


def _account(env: Mapping[str, str]) -> LocalAccount:
    if key := env.get("P402_CHAIN_PRIVATE_KEY"):
        try:
            return cast(LocalAccount, Account.from_key(key.strip()))
        except (ValueError, TypeError) as error:
            raise ChainConfigError(
                f"P402_CHAIN_PRIVATE_KEY is not a private key: {error}"
            ) from None
    if keystore := env.get("P402_CHAIN_KEYSTORE"):
        password = env.get("P402_CHAIN_KEYSTORE_PASSWORD")
        if password is None:
            raise ChainConfigError("P402_CHAIN_KEYSTORE needs P402_CHAIN_KEYSTORE_PASSWORD")
        try:
            keyfile = json.loads(Path(keystore).read_text())
            return cast(LocalAccount, Account.from_key(Account.decrypt(keyfile, password)))
        except (OSError, ValueError, KeyError, TypeError) as error:
            reason = f"no {error} in it" if isinstance(error, KeyError) else str(error)
            raise ChainConfigError(
                f"P402_CHAIN_KEYSTORE: cannot open the keystore {keystore}: {reason}"
            ) from None
    raise ChainConfigError(
        "P402_CHAIN_RPC_URL needs the submitter's key: P402_CHAIN_PRIVATE_KEY or "
        "P402_CHAIN_KEYSTORE (with P402_CHAIN_KEYSTORE_PASSWORD)"
    )


def _settings(env: Mapping[str, str]) -> tuple[int, str | None, LocalAccount | None]:
    """The confirmations, RPC URL and submitter ``P402_CHAIN_*`` give (URL and submitter
    ``None``: the embedded EVM); raises :class:`ChainConfigError` naming what is wrong."""
    value = env.get("P402_CHAIN_CONFIRMATIONS") or "1"
    try:
        confirmations = int(value)
    except ValueError:
        confirmations = 0
    if confirmations < 1:
        raise ChainConfigError(f"P402_CHAIN_CONFIRMATIONS must be an integer >= 1, not {value!r}")
    url = (env.get("P402_CHAIN_RPC_URL") or "").strip()
    if not url or url == EMBEDDED:
        return confirmations, None, None
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ChainConfigError(f"P402_CHAIN_RPC_URL must be an http(s) URL, not {url!r}")
    return confirmations, url, _account(env)


def check_chain_settings(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ChainConfigError` if ``P402_CHAIN_*`` cannot make a chain (no node is
    asked: an unreachable one only delays anchoring)."""
    _settings(os.environ if environ is None else environ)


def chain_from_environment(environ: Mapping[str, str] | None = None) -> AnchorChain:
    """The chain ``P402_CHAIN_*`` describe; the embedded EVM when no RPC URL is set."""
    confirmations, url, account = _settings(os.environ if environ is None else environ)
    if url is None or account is None:
        return embedded_chain(confirmations=confirmations)
    return AnchorChain(rpc_web3(url), account, confirmations=confirmations)
