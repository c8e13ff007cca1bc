"""Time in the ledger: epoch milliseconds in the database, ISO-8601 UTC at the edges."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["from_iso", "now_ms", "to_iso"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_iso(ms: int) -> str:
    """``2026-11-20T12:00:00.123Z``."""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def from_iso(text: str) -> int:
    """Epoch ms from an ISO-8601 date or date-time; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)  # to_iso must show it: within years 1 to 9999 in UTC
    except OverflowError:
        raise ValueError(f"out of range: {text!r}") from None
    return int(moment.timestamp() * 1000)
