"""Cursor pagination for the ledger's lists: a page and the opaque cursor that continues it,
newest-first paging of lists keyed by a time and a string id (alerts, anomalies), the same
``{"data", "next_cursor"}`` pages as the event list, and paging of short lists made whole in
memory (policies, import mappings, reconciliation rows)."""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, RowMapping, Select, and_, or_

__all__ = ["InvalidCursor", "Page", "decode_cursor", "encode_cursor", "newest_first", "page_of"]

_T = TypeVar("_T")


class InvalidCursor(ValueError):
    """A pagination cursor that this ledger did not hand out."""


@dataclass(frozen=True, slots=True)
class Page:
    data: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(number: int, key: str) -> str:
    """An opaque cursor holding a number (a time, an amount) and a string key."""
    return base64.urlsafe_b64encode(f"{number}:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The number and key of a cursor made by :func:`encode_cursor`; raises
    :class:`InvalidCursor` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        number_text, key = text.split(":", 1)
        return int(number_text), key
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
        ms, key = decode_cursor(cursor)
        statement = statement.where(
            or_(time_column < ms, and_(time_column == ms, key_column < key))
        )
    statement = statement.order_by(time_column.desc(), key_column.desc()).limit(limit + 1)
    rows = connection.execute(statement).mappings().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][time_column.name], rows[-1][key_column.name])
    return Page([render(row) for row in rows], next_cursor)


def page_of(
    items: Sequence[_T],
    *,
    key: Callable[[_T], tuple[str, ...]],
    limit: int,
    cursor: str | None,
) -> tuple[list[_T], str | None]:
    """``limit`` of ``items`` (in increasing order of ``key``, each key once) after ``cursor``,
    and the cursor of the next page; raises :class:`InvalidCursor` for a foreign cursor."""
    start = 0
    if cursor:
        width, text = decode_cursor(cursor)
        try:
            after = json.loads(text)
        except ValueError:
            after = None
        if (
            not isinstance(after, list)
            or len(after) != width
            or not all(isinstance(part, str) for part in after)
        ):
            raise InvalidCursor(f"invalid cursor: {cursor!r}")
        start = bisect.bisect_right(items, tuple(after), key=key)
    page = list(items[start : start + limit])
    if start + limit >= len(items):
        return page, None
    last = key(page[-1])
    return page, encode_cursor(len(last), json.dumps(last, ensure_ascii=False))
