"""OTLP protobuf encoding of economic events, by hand.

P402's own pipeline never builds SDK span objects: each finished event is encoded straight
into the bytes of an OTLP ``Span`` (about a tenth of the cost of building an SDK span and
encoding it with the generic exporter), and batches are framed as an
``ExportTraceServiceRequest``. Only the fields P402 uses are written; the wire format is
opentelemetry-proto's ``trace/v1/trace.proto`` and ``common/v1/common.proto``.

Most attributes repeat from event to event. The attributes a caller marks ``common`` (those
of the call: provider, server, models, owners, policy) are encoded as one block, cached by
their values, so they cost one lookup together. Each other attribute's encoded ``KeyValue``
is cached by its value, except the values that are new with every event (ids, signatures,
content), which are encoded afresh. The caches are bounded. The resource and scope of a
pipeline are encoded once (:class:`RequestFrame`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from operator import getitem
from typing import Any, Final

from p402.instrumentation.vocabulary import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_RESPONSE_ID,
    P402_CONTENT_FINGERPRINT_INPUT,
    P402_CONTENT_FINGERPRINT_OUTPUT,
    P402_EVENT_ID,
    P402_EVENT_SIGNATURE,
)

__all__ = ["RequestFrame", "encode_request", "encode_span", "length_delimited"]

_KIND_CLIENT: Final = 3
_STATUS_ERROR: Final = 2
_MAX_UINT64: Final = (1 << 64) - 1

_SMALL: Final = tuple(bytes((i,)) for i in range(128))
_pack_double = struct.Struct("<d").pack

# Span fields that never change: kind CLIENT (6), the error status (15), flags SAMPLED (16).
_KIND_FIELD: Final = b"\x30" + _SMALL[_KIND_CLIENT]
_FLAGS_FIELD: Final = b"\x85\x01" + struct.pack("<I", 1)
_ERROR_AND_FLAGS: Final = b"\x7a\x02\x18" + _SMALL[_STATUS_ERROR] + _FLAGS_FIELD
_pack_times = struct.Struct("<BQBQ").pack  # start (7) and end (8) time, fixed64 each


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    if 0 < value < 16384:  # two bytes: most lengths
        return bytes(((value & 0x7F) | 0x80, value >> 7))
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
        return b"\x21" + _pack_double(value)
    if isinstance(value, tuple | list):
        items = b"".join(length_delimited(b"\x0a", _any_value(item)) for item in value)
        return length_delimited(b"\x2a", items)
    if isinstance(value, bytes):
        return length_delimited(b"\x3a", value)
    return length_delimited(b"\x0a", str(value).encode())


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    """One ``KeyValue`` field (key 1, value 2) under ``tag``."""
    return length_delimited(
        tag, length_delimited(b"\x0a", key.encode()) + length_delimited(b"\x12", _any_value(value))
    )


_SPAN_ATTRIBUTE_TAG: Final = b"\x4a"
_UNCACHED_KEYS: Final = (
    P402_EVENT_ID,
    GEN_AI_RESPONSE_ID,
    P402_EVENT_SIGNATURE,
    P402_CONTENT_FINGERPRINT_INPUT,
    P402_CONTENT_FINGERPRINT_OUTPUT,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
)
"""Attributes whose values are new with (nearly) every event: caching them would only evict
the values that do repeat."""
_MAX_CACHED_VALUES: Final = 1024
_MAX_KEYS: Final = 1024


class _Fields(dict[Any, bytes]):
    """The encoded fields of one attribute key, by value, made when first asked for; the
    values of one key always have one type, so ``True`` and ``1`` never meet here."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __missing__(self, value: Any) -> bytes:
        field = _key_value(_SPAN_ATTRIBUTE_TAG, self.key, value)
        if len(self) >= _MAX_CACHED_VALUES:
            self.clear()  # the values in use now come back at once
        self[value] = field
        return field


class _FreshFields(_Fields):
    """For values that are new with (nearly) every event: encoded, never kept."""

    __slots__ = ("heads", "key_field")

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key_field = length_delimited(b"\x0a", key.encode())
        self.heads: dict[int, bytes] = {}
        """By the size of an encoded string value, all of its field but the value: kept for
        the sizes whose lengths all fit one byte (ids of one kind have one size)."""

    def __missing__(self, value: Any) -> bytes:
        if type(value) is str:
            encoded = value.encode()
            head = self.heads.get(len(encoded))
            if head is not None:
                return head + encoded
            size = len(encoded)
            outer = size + 4 + len(self.key_field)
            if outer < 128:  # every length fits one byte: the usual id
                head = b"".join(
                    (b"\x4a", _SMALL[outer], self.key_field, b"\x12", _SMALL[size + 2], b"\x0a",
                     _SMALL[size])
                )  # fmt: skip
                self.heads[size] = head
                return head + encoded
        return _key_value(_SPAN_ATTRIBUTE_TAG, self.key, value)


class _FieldsByKey(dict[str, _Fields]):
    __slots__ = ()

    def __missing__(self, key: str) -> _Fields:
        fields = _Fields(key)
        if len(self) < _MAX_KEYS:
            self[key] = fields
        return fields


_fields_by_key = _FieldsByKey({key: _FreshFields(key) for key in _UNCACHED_KEYS})
_fields_of: Final = _fields_by_key.__getitem__
_MAX_BLOCKS: Final = 1024
_common_blocks: dict[tuple[tuple[str, Any], ...], bytes] = {}


def _span_attributes(attributes: Mapping[str, Any]) -> list[bytes]:
    """The span's ``attributes`` fields (9), from the caches where they repeat."""
    try:
        # ``_fields_by_key[key][value]`` for each item, with no Python step per item.
        return list(map(getitem, map(_fields_of, attributes), attributes.values()))
    except TypeError:  # an unhashable value (a list)
        return [_key_value(_SPAN_ATTRIBUTE_TAG, key, value) for key, value in attributes.items()]


def _common_block(common: Mapping[str, Any]) -> bytes:
    """The ``attributes`` fields of ``common``, encoded once per distinct set of values."""
    key = tuple(common.items())
    try:
        return _common_blocks[key]
    except KeyError:
        block = b"".join(_span_attributes(common))
    except TypeError:  # an unhashable value (a list)
        return b"".join(_span_attributes(common))
    if len(_common_blocks) >= _MAX_BLOCKS:
        _common_blocks.clear()
    _common_blocks[key] = block
    return block


_MAX_NAMES: Final = 1024
_name_fields: dict[str, bytes] = {}


def encode_span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    name: str,
    start_ns: int,
    end_ns: int,
    common: Mapping[str, Any],
    attributes: Mapping[str, Any],
    error: bool,
) -> bytes:
    """One ``Span`` message of kind CLIENT, sampled, whose attributes are ``common`` (see the
    module docstring) then ``attributes``."""
    name_field = _name_fields.get(name)
    if name_field is None:
        name_field = length_delimited(b"\x2a", name.encode())  # name (5)
        if len(_name_fields) >= _MAX_NAMES:
            _name_fields.clear()
        _name_fields[name] = name_field
    parts = _span_attributes(attributes)
    parts[:0] = (
        length_delimited(b"\x0a", trace_id),  # trace_id (1)
        length_delimited(b"\x12", span_id),  # span_id (2)
        length_delimited(b"\x22", parent_span_id) if parent_span_id else b"",  # (4)
        name_field,
        _KIND_FIELD,
        _pack_times(0x39, start_ns, 0x41, end_ns),
        _common_block(common),
    )
    parts.append(_ERROR_AND_FLAGS if error else _FLAGS_FIELD)
    return b"".join(parts)


class RequestFrame:
    """``ExportTraceServiceRequest`` framing for one resource and one instrumentation scope,
    encoded once: :meth:`encode` wraps a batch of encoded spans."""

    __slots__ = ("_resource", "_scope")

    def __init__(self, resource: Mapping[str, Any], scope: tuple[str, str]) -> None:
        scope_name, scope_version = scope
        self._resource = length_delimited(
            b"\x0a", b"".join(_key_value(b"\x0a", key, value) for key, value in resource.items())
        )
        self._scope = length_delimited(
            b"\x0a",
            length_delimited(b"\x0a", scope_name.encode())
            + length_delimited(b"\x12", scope_version.encode()),
        )

    def encode(self, spans: Iterable[bytes]) -> bytes:
        scope_spans = b"".join([self._scope, *(length_delimited(b"\x12", s) for s in spans)])
        resource_spans = self._resource + length_delimited(b"\x12", scope_spans)
        return length_delimited(b"\x0a", resource_spans)


def encode_request(
    resource: Mapping[str, Any], scope: tuple[str, str], spans: Iterable[bytes]
) -> bytes:
    """An ``ExportTraceServiceRequest`` with one resource and one scope holding ``spans``."""
    return RequestFrame(resource, scope).encode(spans)
