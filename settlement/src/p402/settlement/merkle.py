"""RFC 6962 (Certificate Transparency) Merkle trees: tree hash, audit paths, verification.

The tree hash of n leaf inputs ``D[0:n]`` (RFC 6962 §2.1, RFC 9162 §2.1.1):

- ``MTH({}) = SHA-256()``
- ``MTH({d0}) = SHA-256(0x00 || d0)``
- ``MTH(D[0:n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with k the largest power of
  two smaller than n.

P402 batches a tenant's receipts into one tree: a leaf's input is the 32-byte SHA-256 of the
receipt's canonical bytes, so the leaf hash is ``SHA-256(0x00 || receipt_hash)``. The
functions here take raw leaf inputs, as the RFC's own test vectors do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "audit_path",
    "leaf_hash",
    "node_hash",
    "root_from_path",
    "tree_hash",
    "tree_hash_of_leaf_hashes",
    "verify_inclusion",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(leaf_input: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + leaf_input).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` ≥ 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def tree_hash_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The tree hash over leaves already hashed with :func:`leaf_hash`."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    level = list(hashes)
    # Bottom-up pairing gives the same tree as the recursive definition: an odd node at the
    # end of a level is carried up unchanged, which is what the largest-power-of-two split does.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def tree_hash(leaf_inputs: Sequence[bytes]) -> bytes:
    """MTH of the leaf inputs."""
    return tree_hash_of_leaf_hashes([leaf_hash(data) for data in leaf_inputs])


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*_path(hashes[:k], index), tree_hash_of_leaf_hashes(hashes[k:])]
    return [*_path(hashes[k:], index - k), tree_hash_of_leaf_hashes(hashes[:k])]


def audit_path(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path (RFC 6962 §2.1.1 ``PATH(m, D[n])``) of leaf ``index``, bottom first."""
    if not 0 <= index < len(leaf_hashes):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaf_hashes)} leaves")
    return _path(leaf_hashes, index)


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` leads to from leaf hash ``leaf`` at ``index`` of a tree of
    ``size`` leaves (RFC 9162 §2.1.3.2); ``None`` when the path cannot belong to such a
    tree (wrong length, index out of range)."""
    if not 0 <= index < size:
        return None
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return result if sn == 0 else None


def verify_inclusion(
    leaf_input: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``leaf_input`` is leaf ``index`` of the tree of ``size`` leaves with ``root``."""
    return root_from_path(leaf_hash(leaf_input), index, size, path) == root
