"""The interpreter's recursion limit, kept where it was across the chain libraries' imports.

``py_ecc`` (imported by ``eth_account``, so by web3) raises the limit to 100,000 when it is
first imported, and ``py-evm`` (the embedded chain) to 12,288. Under such a limit, decoding a
deeply nested JSON body in C overflows the C stack and kills the process, where the default
limit raises ``RecursionError`` and the server answers 400. P402 needs neither library's deep
recursion (no BLS pairings, no nested contract calls), so the limit is put back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["recursion_limit_kept"]


@contextmanager
def recursion_limit_kept() -> Iterator[None]:
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)
