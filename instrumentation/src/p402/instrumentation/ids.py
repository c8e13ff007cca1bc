"""Economic-event ids: UUIDv7 (RFC 9562), so ids sort by creation time across processes.

The random bits come from the operating system's generator, read 64 ids' worth at a time:
``os.urandom`` lets other threads run while it waits on the kernel, and a thread that does
that once per event gives up its turn at the interpreter once per event. The pool is
dropped in a forked child, which must not repeat its parent's ids.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Final

__all__ = ["new_event_id"]

_RANDOM_BYTES: Final = 10  # rand_a (12 bits) and rand_b (62 bits), rounded up
_POOL_IDS: Final = 64

_lock = threading.Lock()
_pool = b""
_taken = 0


def _forget_pool() -> None:
    global _lock, _pool, _taken
    _lock, _pool, _taken = threading.Lock(), b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random_bits() -> int:
    global _pool, _taken
    with _lock:
        if _taken >= len(_pool):
            _pool, _taken = os.urandom(_RANDOM_BYTES * _POOL_IDS), 0
        start = _taken
        _taken += _RANDOM_BYTES
        return int.from_bytes(_pool[start:_taken], "big")


def new_event_id() -> str:
    """A fresh, globally unique, time-ordered id in canonical UUID text form."""
    unix_ms = time.time_ns() // 1_000_000
    rand = _random_bits()
    value = (
        (unix_ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version 7
        | ((rand >> 62) & 0xFFF) << 64  # rand_a
        | 0b10 << 62  # RFC 9562 variant
        | rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    )
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
