"""P402 settlement: session receipts, Merkle batches of their hashes, and the anchoring of
each batch's root on a Tempo-compatible EVM chain."""
