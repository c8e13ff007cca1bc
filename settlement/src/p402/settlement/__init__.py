"""P402 settlement: session receipts, Merkle batches of their hashes, and the anchoring of
each batch's root on a Tempo-compatible EVM chain.

- :mod:`~p402.settlement.receipts`: what a receipt says, its hash, immutability, reading.
- :mod:`~p402.settlement.sealing`: sealing idle or closed sessions into receipts.
- :mod:`~p402.settlement.merkle`: RFC 6962 tree hashes and audit paths.
- :mod:`~p402.settlement.chain`: the chain backend (JSON-RPC node or embedded EVM).
- :mod:`~p402.settlement.anchoring`: batches and the persisted anchoring state machine.
- :mod:`~p402.settlement.proofs` and :mod:`~p402.settlement.verify`: proof bundles, and
  their verification with nothing but an RPC URL.
- :mod:`~p402.settlement.documents`: PDF and CSV renderings.
- :mod:`~p402.settlement.jobs`: the two scheduled jobs.
"""

from p402.settlement._recursion import recursion_limit_kept

with recursion_limit_kept():
    import web3  # noqa: F401  (first import of py_ecc, which raises the limit)
