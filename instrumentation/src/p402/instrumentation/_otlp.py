"""OTLP protobuf encoding of economic events, by hand.

P402's own pipeline never builds SDK span objects: each finished event is encoded straight
into the bytes of an OTLP ``Span`` (about a tenth of the cost of building an SDK span and
encoding it with the generic exporter), and batches are framed as an
``ExportTraceServiceRequest``. Only the fields P402 uses are written; the wire format is
opentelemetry-proto's ``trace/v1/trace.proto`` and ``common/v1/common.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["encode_request", "encode_span", "length_delimited"]

_KIND_CLIENT: Final = 3
_STATUS_ERROR: Final = 2
_FLAGS_SAMPLED: Final = 1
_MAX_UINT64: Final = (1 << 64) - 1


_SMALL: Final = tuple(bytes((i,)) for i in range(128))


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= _MAX_UINT64  # int64 is two's complement on the wire
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, its length, its bytes."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 128 else _varint(size)) + payload


def _any_value(value: Any) -> bytes:
    # AnyValue: string 1, bool 2, int 3, double 4, array 5, bytes 7.
    if isinstance(value, str):
        return length_delimited(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, tuple | list):
        items = b"".join(length_delimited(b"\x0a", _any_value(item)) for item in value)
        return length_delimited(b"\x2a", items)
    if isinstance(value, bytes):
        return length_delimited(b"\x3a", value)
    return length_delimited(b"\x0a", str(value).encode())


# Most attributes repeat from call to call (provider, models, owners, evidence, ...): their
# encoded fields are kept, up to a bound.
_MAX_CACHED: Final = 8192
_encoded_fields: dict[tuple[bytes, str, Any], bytes] = {}


def _key_value_field(tag: bytes, key: str, value: Any) -> bytes:
    cache_key = (tag, key, value)
    try:
        return _encoded_fields[cache_key]
    except KeyError:
        cacheable = len(_encoded_fields) < _MAX_CACHED
    except TypeError:  # an unhashable value (a list)
        cacheable = False
    encoded_value = _any_value(value)
    field = length_delimited(
        tag, length_delimited(b"\x0a", key.encode()) + length_delimited(b"\x12", encoded_value)
    )
    if cacheable:
        _encoded_fields[cache_key] = field
    return field


def _key_values(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    """Repeated ``KeyValue`` fields (key 1, value 2) under ``tag``."""
    return b"".join([_key_value_field(tag, key, value) for key, value in attributes.items()])


def encode_span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    error: bool,
) -> bytes:
    """One ``Span`` message of kind CLIENT, sampled."""
    parts = [
        length_delimited(b"\x0a", trace_id),
        length_delimited(b"\x12", span_id),
    ]
    if parent_span_id:
        parts.append(length_delimited(b"\x22", parent_span_id))
    parts += [
        length_delimited(b"\x2a", name.encode()),
        b"\x30" + _varint(_KIND_CLIENT),
        b"\x39" + struct.pack("<Q", start_ns),
        b"\x41" + struct.pack("<Q", end_ns),
        _key_values(b"\x4a", attributes),
    ]
    if error:
        parts.append(length_delimited(b"\x7a", b"\x18" + _varint(_STATUS_ERROR)))
    parts.append(b"\x85\x01" + struct.pack("<I", _FLAGS_SAMPLED))
    return b"".join(parts)


def encode_request(
    resource: Mapping[str, Any], scope: tuple[str, str], spans: Iterable[bytes]
) -> bytes:
    """An ``ExportTraceServiceRequest`` with one resource and one scope holding ``spans``."""
    scope_name, scope_version = scope
    encoded_scope = length_delimited(b"\x0a", scope_name.encode()) + length_delimited(
        b"\x12", scope_version.encode()
    )
    scope_spans = length_delimited(b"\x0a", encoded_scope) + b"".join(
        length_delimited(b"\x12", span) for span in spans
    )
    resource_spans = length_delimited(b"\x0a", _key_values(b"\x0a", resource)) + length_delimited(
        b"\x12", scope_spans
    )
    return length_delimited(b"\x0a", resource_spans)
