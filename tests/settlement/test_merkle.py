"""RFC 6962 Merkle trees: the published Certificate Transparency test vectors, audit paths for
every tree size against a direct transcription of the RFC's recursive definitions, and
verification that refuses every corrupted proof."""

from __future__ import annotations

import base64
import hashlib

import pytest

from p402.settlement import merkle

# Leaf inputs and roots of the RFC 6962 reference tests (certificate-transparency,
# transparency-dev/merkle testonly/constants.go): these hash raw leaf inputs.
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index from 0, tree size, audit path): testonly/reference_test.go.
PATHS = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
# Roots of larger trees whose leaf i is the two bytes of i, little-endian
# (transparency-dev/merkle compact/range_test.go, TestGetRootHashGolden).
GOLDEN_ROOTS = {
    10: "VjWMPSYNtCuCNlF/RLnQy6HcwSk6CIipfxm+hettA+4=",
    15: "j4SulYmocFuxdeyp12xXCIgK6PekBcxzAIj4zbQzNEI=",
    16: "c+4Uc6BCMOZf/v3NZK1kqTUJe+bBoFtOhP+P3SayKRE=",
    100: "dUh9hYH88p0CMoHkdr1wC2szbhcLAXOejWpINIooKUY=",
    255: "SmdsuKUqiod3RX2jyF2M6JnbdE4QuTwwipfAowI4/i0=",
}


def test_leaf_and_node_hashes_follow_the_rfc_6962_hasher_vectors():
    assert hashlib.sha256(b"").hexdigest() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.tree_hash([]).hex() == hashlib.sha256(b"").hexdigest()
    assert merkle.leaf_hash(b"").hex() == ROOTS[0]
    assert merkle.leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert merkle.node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_hashes_match_the_published_roots(size):
    assert merkle.tree_hash(LEAVES[:size]).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("size", "root"), sorted(GOLDEN_ROOTS.items()))
def test_larger_trees_match_the_published_roots(size, root):
    leaves = [i.to_bytes(2, "little") for i in range(size)]
    assert merkle.tree_hash(leaves) == base64.b64decode(root)


@pytest.mark.parametrize(("index", "size", "path"), PATHS)
def test_audit_paths_match_the_published_paths_and_verify(index, size, path):
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES[:size]]
    computed = merkle.audit_path(hashes, index)
    assert [node.hex() for node in computed] == path
    root = bytes.fromhex(ROOTS[size - 1])
    assert merkle.verify_inclusion(LEAVES[index], index, size, computed, root)


def _reference_tree_hash(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 transcribed literally (recursive, largest power of two below n)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(
        b"\x01" + _reference_tree_hash(leaves[:k]) + _reference_tree_hash(leaves[k:])
    ).digest()


def _reference_path(leaves: list[bytes], m: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]) transcribed literally."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*_reference_path(leaves[:k], m), _reference_tree_hash(leaves[k:])]
    return [*_reference_path(leaves[k:], m - k), _reference_tree_hash(leaves[:k])]


def test_every_leaf_of_every_tree_up_to_70_leaves_has_a_verifying_audit_path():
    receipt_hashes = [hashlib.sha256(str(i).encode()).digest() for i in range(70)]
    for size in range(1, len(receipt_hashes) + 1):
        leaves = receipt_hashes[:size]
        root = merkle.tree_hash(leaves)
        assert root == _reference_tree_hash(leaves)
        hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
        for index in range(size):
            path = merkle.audit_path(hashes, index)
            assert path == _reference_path(leaves, index)
            assert merkle.verify_inclusion(leaves[index], index, size, path, root)
            if size > 1:  # the same path proves nothing for another leaf
                other = (index + 1) % size
                assert not merkle.verify_inclusion(leaves[other], index, size, path, root)


def _corruptions(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes):
    """Probes that must all fail (after transparency-dev/merkle's corruptInclusionProof)."""
    some_hash = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    yield "index - 1", (leaf, index - 1, size, path, root)
    yield "index + 1", (leaf, index + 1, size, path, root)
    yield "index ^ 2", (leaf, index ^ 2, size, path, root)
    yield "size * 2", (leaf, index, size * 2, path, root)
    yield "size // 2", (leaf, index, size // 2, path, root)
    yield "wrong leaf", (b"WrongLeaf", index, size, path, root)
    yield "empty root", (leaf, index, size, path, hashlib.sha256(b"").digest())
    yield "random root", (leaf, index, size, path, some_hash)
    yield "trailing garbage", (leaf, index, size, [*path, b""], root)
    yield "trailing root", (leaf, index, size, [*path, root], root)
    yield "preceding garbage", (leaf, index, size, [b"", *path], root)
    yield "preceding root", (leaf, index, size, [root, *path], root)
    for i in range(len(path)):
        flipped = bytearray(path[i])
        flipped[0] ^= 8
        yield (
            f"bit flip in node {i}",
            (leaf, index, size, [*path[:i], bytes(flipped), *path[i + 1 :]], root),
        )
    if path:
        yield "removed node", (leaf, index, size, path[:-1], root)
    if len(path) > 1:
        yield "inserted node", (leaf, index, size, [path[0], some_hash, *path[1:]], root)


@pytest.mark.parametrize(("index", "size", "path"), [p for p in PATHS if p[1] > 1])
def test_verification_refuses_every_corrupted_proof(index, size, path):
    nodes = [bytes.fromhex(node) for node in path]
    root = bytes.fromhex(ROOTS[size - 1])
    assert merkle.verify_inclusion(LEAVES[index], index, size, nodes, root)
    for description, (leaf, i, n, p, r) in _corruptions(index, size, nodes, root, LEAVES[index]):
        assert not merkle.verify_inclusion(leaf, i, n, p, r), description


def test_an_index_outside_the_tree_has_no_path():
    with pytest.raises(IndexError):
        merkle.audit_path([merkle.leaf_hash(b"a")], 1)
    assert merkle.root_from_path(merkle.leaf_hash(b"a"), 0, 0, []) is None
