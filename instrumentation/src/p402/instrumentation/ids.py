"""Economic-event ids: UUIDv7 (RFC 9562), so ids sort by creation time across processes.

The random bits come from the operating system's generator, read 67 ids' worth at a time:
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

_RANDOM_DIGITS: Final = 19  # hex digits: rand_a (3), the variant's (2 random bits), rand_b
_POOL_BYTES: Final = 640  # 67 ids
_VARIANT: Final = "89ab" * 4  # the RFC 9562 variant (0b10) and two random bits

_lock = threading.Lock()
_pool = ""
_taken = 0


def _forget_pool() -> None:
    global _lock, _pool, _taken
    _lock, _pool, _taken = threading.Lock(), "", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A fresh, globally unique, time-ordered id in canonical UUID text form."""
    global _pool, _taken
    unix_ms = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    with _lock:  # the random digits, from the pool
        if _taken + _RANDOM_DIGITS > len(_pool):
            _pool, _taken = os.urandom(_POOL_BYTES).hex(), 0
        start = _taken
        _taken += _RANDOM_DIGITS
        rand = _pool[start:_taken]
    return (
        f"{unix_ms[:8]}-{unix_ms[8:]}-7{rand[:3]}-{_VARIANT[int(rand[3], 16)]}{rand[4:7]}-"
        f"{rand[7:]}"
    )
