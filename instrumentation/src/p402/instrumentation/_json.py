"""Reading JSON bodies and events: objects with exact decimals, from the fastest decoder here.

``msgspec`` decodes about three times faster than the standard library; it is used when it
is installed. Whatever it refuses (a byte-order mark, ``NaN``, a lone surrogate, a body that
is not UTF-8) goes to :func:`json.loads`, so the result never depends on which one ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

__all__ = ["load_json"]

_STANDARD: Final = json.JSONDecoder(parse_float=Decimal)


def _standard_decode(data: bytes) -> Any:
    return _STANDARD.decode(data.decode())  # strict UTF-8: anything else goes the long way


_decode: Callable[[bytes], Any]
try:
    from msgspec.json import Decoder
except ImportError:  # pragma: no cover - msgspec is optional
    _decode = _standard_decode
else:
    _decode = Decoder(float_hook=Decimal).decode


def load_json(data: bytes) -> Mapping[str, Any] | None:
    """A JSON object with exact decimals, or ``None`` when ``data`` is not one."""
    try:
        value = _decode(data)
    except ValueError:  # also UnicodeDecodeError; json.loads detects the other encodings
        try:
            value = json.loads(data, parse_float=Decimal)
        except ValueError:
            return None
    return value if type(value) is dict or isinstance(value, Mapping) else None
