"""Cursor pagination, newest first, for the ledger's lists keyed by a time and a string id
(alerts, anomalies): the same ``{"data", "next_cursor"}`` pages as the event list."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Connection, RowMapping, Select, and_, or_

from p402.ledger.events import InvalidCursor, Page

__all__ = ["newest_first"]


def _encode(ms: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{ms}:{key}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms_text, key = text.split(":", 1)
        return int(ms_text), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor: {cursor!r}") from None


def newest_first(
    connection: Connection,
    statement: Select[Any],
    *,
    time_column: Column[int],
    key_column: Column[str],
    limit: int,
    cursor: str | None,
    render: Callable[[RowMapping], dict[str, Any]],
) -> Page:
    """Run ``statement`` newest first (by ``time_column``, then ``key_column``), ``limit``
    rows at a time after ``cursor``; raises :class:`InvalidCursor` for a foreign cursor."""
    if cursor:
        ms, key = _decode(cursor)
        statement = statement.where(
            or_(time_column < ms, and_(time_column == ms, key_column < key))
        )
    statement = statement.order_by(time_column.desc(), key_column.desc()).limit(limit + 1)
    rows = connection.execute(statement).mappings().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode(rows[-1][time_column.name], rows[-1][key_column.name])
    return Page([render(row) for row in rows], next_cursor)
