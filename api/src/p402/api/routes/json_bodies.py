"""The JSON bodies that routes read themselves: numbers as exact decimals (never binary
floats), and no NUL character in any text, which the ledger cannot store (PostgreSQL's text
refuses it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from p402.api.errors import ApiError

__all__ = ["json_document", "json_items", "refuse_nul"]


def refuse_nul(document: object) -> None:
    """Raise ``ValueError`` when a string of ``document`` (a key or a value) holds NUL."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("text must not contain NUL (U+0000)")
        elif isinstance(value, Mapping):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)


_DECODER: Final = json.JSONDecoder(parse_float=Decimal)


def json_document(body: bytes, *, code: str = "bad_request") -> Any:
    """The JSON value of ``body``; a body that is not JSON, or holds NUL in its text, answers
    400 with ``code``."""
    try:
        # as json.loads(body, parse_float=Decimal), with a decoder made once
        document = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError:
        raise ApiError(400, code, "the body is not JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ApiError(400, code, f"the body is not JSON: {error}") from None
    # JSON text holds NUL only as the escape \u0000 (or in UTF-16/32, where every ASCII
    # character has a NUL byte): other bodies need no walk.
    if b"\\u0000" in body or b"\x00" in body:
        try:
            refuse_nul(document)
        except ValueError as error:
            raise ApiError(400, code, f"the body's {error}") from None
    return document


def json_items(body: bytes) -> list[Any]:
    """A JSON object or list of objects (numbers as exact decimals)."""
    value = json_document(body)
    return value if isinstance(value, list) else [value]
