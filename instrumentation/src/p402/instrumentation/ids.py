"""Economic-event ids: UUIDv7 (RFC 9562), so ids sort by creation time across processes."""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_event_id"]


def new_event_id() -> str:
    """A fresh, globally unique, time-ordered id in canonical UUID text form."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    return str(uuid.UUID(int=value))
