"""Decoding OTLP trace payloads into plain spans: ids as hex, attributes as a dict.

Two encodings give the same :class:`PlainSpan` objects for the same request:

* protobuf (``application/x-protobuf``), parsed by the protobuf runtime and then walked;
* OTLP/JSON (``application/json``), parsed by :func:`json.loads` and walked directly, not
  through ``google.protobuf.json_format`` (hundreds of µs a span). The walk follows the OTLP
  JSON mapping: lowerCamelCase field names, or the proto's snake_case ones; ``traceId``,
  ``spanId`` and ``parentSpanId`` as hex, not base64; 64-bit integers as strings or numbers;
  enums as integers (or their names); ``bytesValue`` as base64; unknown fields ignored and
  ``null`` read as absent. Every known field is checked, including those a ``PlainSpan`` does
  not keep (events, links, status, scope), and the whole body is decoded before anything is
  returned, so a :class:`MalformedPayload` names what is wrong and where, e.g.
  ``resourceSpans[0].scopeSpans[0].spans[3].traceId: not 32 hex digits: "0af765…"``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = [
    "MAX_VALUE_NESTING",
    "MalformedPayload",
    "PlainSpan",
    "export_response",
    "export_response_json",
    "parse_json",
    "parse_protobuf",
    "spans",
]

MAX_VALUE_NESTING: Final = 32
"""How deep ``arrayValue``/``kvlistValue`` may nest in OTLP/JSON (protobuf stops near 47)."""


class MalformedPayload(ValueError):
    """The body is not a valid OTLP export request."""


@dataclass(frozen=True, slots=True)
class PlainSpan:
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# protobuf


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise MalformedPayload(f"not an OTLP ExportTraceServiceRequest: {error}") from None
    return request


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(key_values: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in key_values:
        value = item.value
        # Most attributes are strings or integers: a non-empty string or a non-zero integer
        # is the value that is set (they are members of one oneof), read without asking for
        # the kind. An empty string, a zero and every other kind are asked for.
        result[item.key] = value.string_value or value.int_value or _value(value)
    return result


def spans(request: ExportTraceServiceRequest) -> Iterator[PlainSpan]:
    """Every span of the request, resource by resource, scope by scope."""
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield PlainSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    name=span.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    resource=resource,
                )


def export_response(rejected: int, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


# ---------------------------------------------------------------------------------------------
# OTLP/JSON


class _Invalid(Exception):
    """A JSON value the OTLP mapping refuses; its path, leaf first, grows as it rises."""

    def __init__(self, message: str, *path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = list(path)

    def within(self, *segments: str) -> _Invalid:
        self.path.extend(segments)
        return self

    def where(self) -> str:
        return ".".join(reversed(self.path))


_Check = Callable[[Any, str], object]

_JSON_KINDS: Final[dict[type, str]] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}
_UINT32: Final = (0, 2**32 - 1)
_UINT64: Final = (0, 2**64 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)
_INT32: Final = (-(2**31), 2**31 - 1)
_HEX = re.compile(r"[0-9a-fA-F]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPECIAL_DOUBLES: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_URLSAFE: Final = str.maketrans("-_", "+/")


def _kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _got(value: Any) -> str:
    return f"got {_kind(value)}"


def _shown(value: Any) -> str:
    """A short rendering of an offending value, for an error message."""
    if type(value) in (dict, list):
        return _kind(value)
    text = json.dumps(value[:41] if type(value) is str else value, ensure_ascii=False)
    return text if len(text) <= 42 else f"{text[:40]}…"


def _array(value: Any, field: str) -> list[Any]:
    if type(value) is not list:
        raise _Invalid(f"expected an array, {_got(value)}", field)
    return value


def _object(value: Any, what: str, *path: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Invalid(f"expected {what} object, {_got(value)}", *path)
    return value


def _string(value: Any, field: str) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected a string, {_got(value)}", field)
    return value


def _bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"expected true or false, {_got(value)}", field)
    return value


def _integer(value: Any, field: str, bounds: tuple[int, int]) -> int:
    kind = type(value)
    if kind is int:
        number: int = value
    elif kind is str and 0 < len(value) <= 24 and value.isascii():
        # ASCII digits after an optional minus: int() alone would also take spaces, "+" and "_"
        if not (value[1:] if value[0] == "-" else value).isdigit():
            raise _Invalid(f"not an integer: {_shown(value)}", field)
        number = int(value)
    elif kind is float and value.is_integer():
        number = int(value)
    else:
        raise _Invalid(f"not an integer: {_shown(value)}", field)
    if not bounds[0] <= number <= bounds[1]:
        raise _Invalid(f"{number} is out of range [{bounds[0]}, {bounds[1]}]", field)
    return number


def _uint32(value: Any, field: str) -> int:
    return _integer(value, field, _UINT32)


def _uint64(value: Any, field: str) -> int:
    return _integer(value, field, _UINT64)


def _int64(value: Any, field: str) -> int:
    return _integer(value, field, _INT64)


def _double(value: Any, field: str) -> float:
    kind = type(value)
    if kind is float:
        number: float = value
    elif kind is int:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    elif kind is str:
        special = _SPECIAL_DOUBLES.get(value)
        if special is not None:
            return special
        if not _NUMBER.fullmatch(value):
            raise _Invalid(f"not a number: {_shown(value)}", field)
        number = float(value)
    else:
        raise _Invalid(f"expected a number, {_got(value)}", field)
    if math.isinf(number):
        raise _Invalid('too large for a double (write "Infinity" for infinity)', field)
    return number


def _bytes(value: Any, field: str) -> bytes:
    if type(value) is not str:
        raise _Invalid(f"expected a base64 string, {_got(value)}", field)
    try:
        # standard or URL-safe alphabet, padding optional, as the protobuf JSON mapping allows
        text = value.translate(_URLSAFE)
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise _Invalid(f"not base64: {_shown(value)}", field) from None


def _hex_id(value: Any, field: str, digits: int) -> str:
    """An id as lower-case hex; absent or ``""`` is the empty id, as in protobuf."""
    if value is None or value == "":
        return ""
    if type(value) is not str or len(value) != digits or not _HEX.fullmatch(value):
        hint = " (OTLP/JSON writes ids as hex, not base64)" if _is_base64(value, digits) else ""
        raise _Invalid(f"not {digits} hex digits: {_shown(value)}{hint}", field)
    return value.lower()


def _is_base64(value: Any, digits: int) -> bool:
    try:
        return len(_bytes(value, "")) * 2 == digits
    except _Invalid:
        return False


def _trace_id(value: Any, field: str) -> str:
    return _hex_id(value, field, 32)


def _span_id(value: Any, field: str) -> str:
    return _hex_id(value, field, 16)


def _enum(names: list[str]) -> _Check:
    known = frozenset(names)

    def check(value: Any, field: str) -> object:
        if type(value) is str and value in known:
            return value
        if type(value) is not int:
            raise _Invalid(f"expected an enum integer, {_got(value)}: {_shown(value)}", field)
        return _integer(value, field, _INT32)

    return check


def _any_value(value: Any, depth: int) -> Any:
    """The Python value of one ``AnyValue``: as :func:`_value` gives it for protobuf."""
    if type(value) is not dict:
        raise _Invalid(f"expected an AnyValue object, {_got(value)}")
    result = None
    seen = ""
    for key, item in value.items():
        kind = _ANY_KINDS.get(key)
        if kind is None or item is None:
            continue  # unknown fields are ignored and null is absent, per the JSON mapping
        if seen:
            raise _Invalid(f"more than one value: {seen} and {key}")
        seen = key
        field, decode = kind
        result = _nested(item, field, depth) if decode is None else decode(item, field)
    return result


def _nested(value: Any, field: str, depth: int) -> tuple[Any, ...] | dict[str, Any]:
    """An ``arrayValue`` as a tuple or a ``kvlistValue`` as a dict, ``depth`` levels down."""
    if depth >= MAX_VALUE_NESTING:
        raise _Invalid(f"values nest deeper than {MAX_VALUE_NESTING} levels", field)
    try:
        if field == "kvlistValue":
            return _key_values(_object(value, "a KeyValueList").get("values"), "values", depth + 1)
        values = _object(value, "an ArrayValue").get("values")
        if values is None:
            return ()
        result = []
        for index, item in enumerate(_array(values, "values")):
            try:
                result.append(_any_value(item, depth + 1))
            except _Invalid as bad:
                raise bad.within(f"values[{index}]") from None
        return tuple(result)
    except _Invalid as bad:
        raise bad.within(field) from None


_ANY_KINDS: Final[dict[str, tuple[str, _Check | None]]] = {
    name: (canonical, decode)
    for canonical, snake, decode in [
        ("stringValue", "string_value", _string),
        ("boolValue", "bool_value", _bool),
        ("intValue", "int_value", _int64),
        ("doubleValue", "double_value", _double),
        ("bytesValue", "bytes_value", _bytes),
        ("arrayValue", "array_value", None),
        ("kvlistValue", "kvlist_value", None),
    ]
    for name in (canonical, snake)
}


def _key_values(value: Any, field: str, depth: int = 0) -> dict[str, Any]:
    """A ``repeated KeyValue`` as a dict; a repeated key keeps its last value, as in protobuf."""
    result: dict[str, Any] = {}
    if value is None:
        return result
    for index, item in enumerate(_array(value, field)):
        if type(item) is not dict:
            raise _Invalid(f"expected a KeyValue object, {_got(item)}", f"{field}[{index}]")
        key = item.get("key")
        if type(key) is not str:
            if key is not None:
                raise _Invalid(f"expected a string, {_got(key)}", "key", f"{field}[{index}]")
            key = ""
        any_value = item.get("value")
        if type(any_value) is dict and len(any_value) == 1:
            # the common cases first, without a call: a string, a non-negative int64 as a string
            text = any_value.get("stringValue")
            if type(text) is str:
                result[key] = text
                continue
            text = any_value.get("intValue")
            if type(text) is str and 0 < len(text) < 19 and text.isascii() and text.isdigit():
                result[key] = int(text)
                continue
        if any_value is not None:
            try:
                any_value = _any_value(any_value, depth)
            except _Invalid as bad:
                raise bad.within("value", f"{field}[{index}]") from None
        result[key] = any_value
    return result


def _snake(camel: str) -> str:
    return re.sub(r"[A-Z]", lambda match: f"_{match.group().lower()}", camel)


def _fields(checks: dict[str, _Check]) -> dict[str, tuple[str, _Check]]:
    """A lookup from both JSON names of each field to its camelCase name and check."""
    return {
        name: (camel, check)
        for camel, check in checks.items()
        for name in dict.fromkeys((camel, _snake(camel)))
    }


def _check_fields(message: dict[str, Any], fields: dict[str, tuple[str, _Check]]) -> None:
    """Check the fields of ``message`` named in ``fields``; the others are left alone."""
    for key, value in message.items():
        known = fields.get(key)
        if known is not None and value is not None:
            known[1](value, known[0])


def _message(fields: dict[str, _Check], what: str) -> _Check:
    """A check of a whole message that is validated only, not kept."""
    table = _fields(fields)

    def check(value: Any, field: str) -> object:
        try:
            _check_fields(_object(value, what), table)
        except _Invalid as bad:
            raise bad.within(field) from None
        return value

    return check


def _repeated(check: _Check) -> _Check:
    def check_all(value: Any, field: str) -> object:
        for index, item in enumerate(_array(value, field)):
            check(item, f"{field}[{index}]")
        return value

    return check_all


_SCOPE: Final = _message(
    {
        "name": _string,
        "version": _string,
        "attributes": _key_values,
        "droppedAttributesCount": _uint32,
    },
    "an InstrumentationScope",
)
_RESOURCE_OTHER: Final = _fields({"droppedAttributesCount": _uint32})
_SPAN_OTHER: Final = _fields(
    {
        "traceState": _string,
        "parentSpanId": _span_id,
        "flags": _uint32,
        "kind": _enum(list(Span.SpanKind.keys())),
        "droppedAttributesCount": _uint32,
        "events": _repeated(
            _message(
                {
                    "timeUnixNano": _uint64,
                    "name": _string,
                    "attributes": _key_values,
                    "droppedAttributesCount": _uint32,
                },
                "an Event",
            )
        ),
        "droppedEventsCount": _uint32,
        "links": _repeated(
            _message(
                {
                    "traceId": _trace_id,
                    "spanId": _span_id,
                    "traceState": _string,
                    "attributes": _key_values,
                    "droppedAttributesCount": _uint32,
                    "flags": _uint32,
                },
                "a Link",
            )
        ),
        "droppedLinksCount": _uint32,
        "status": _message(
            {"message": _string, "code": _enum(list(Status.StatusCode.keys()))}, "a Status"
        ),
    }
)


def _field(message: dict[str, Any], camel: str, snake: str) -> Any:
    value = message.get(camel)
    return message.get(snake) if value is None else value


def _json_span(span: Any, resource: dict[str, Any]) -> PlainSpan:
    get = _object(span, "a Span").get
    trace_id = get("traceId")
    if trace_id is None:
        trace_id = get("trace_id")
    span_id = get("spanId")
    if span_id is None:
        span_id = get("span_id")
    start = get("startTimeUnixNano")
    if start is None:
        start = get("start_time_unix_nano")
    end = get("endTimeUnixNano")
    if end is None:
        end = get("end_time_unix_nano")
    name = get("name")
    _check_fields(span, _SPAN_OTHER)
    return PlainSpan(
        trace_id=_hex_id(trace_id, "traceId", 32),
        span_id=_hex_id(span_id, "spanId", 16),
        name="" if name is None else _string(name, "name"),
        start_ns=0 if start is None else _integer(start, "startTimeUnixNano", _UINT64),
        end_ns=0 if end is None else _integer(end, "endTimeUnixNano", _UINT64),
        attributes=_key_values(get("attributes"), "attributes"),
        resource=resource,
    )


def _resource_spans(resource_spans: Any, result: list[PlainSpan]) -> None:
    message = _object(resource_spans, "a ResourceSpans")
    resource: dict[str, Any] = {}
    holder = message.get("resource")
    if holder is not None:
        holder = _object(holder, "a Resource", "resource")
        try:
            resource = _key_values(holder.get("attributes"), "attributes")
            _check_fields(holder, _RESOURCE_OTHER)
        except _Invalid as bad:
            raise bad.within("resource") from None
    schema_url = _field(message, "schemaUrl", "schema_url")
    if schema_url is not None:
        _string(schema_url, "schemaUrl")
    scope_spans_list = _field(message, "scopeSpans", "scope_spans")
    if scope_spans_list is None:
        return
    for index, scope_spans in enumerate(_array(scope_spans_list, "scopeSpans")):
        try:
            _scope_spans(scope_spans, resource, result)
        except _Invalid as bad:
            raise bad.within(f"scopeSpans[{index}]") from None


def _scope_spans(scope_spans: Any, resource: dict[str, Any], result: list[PlainSpan]) -> None:
    message = _object(scope_spans, "a ScopeSpans")
    scope = message.get("scope")
    if scope is not None:
        _SCOPE(scope, "scope")
    schema_url = _field(message, "schemaUrl", "schema_url")
    if schema_url is not None:
        _string(schema_url, "schemaUrl")
    span_list = message.get("spans")
    if span_list is None:
        return
    append = result.append
    for index, span in enumerate(_array(span_list, "spans")):
        try:
            append(_json_span(span, resource))
        except _Invalid as bad:
            raise bad.within(f"spans[{index}]") from None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON (OTLP/JSON quotes it: {json.dumps(name)})")


def parse_json(body: bytes) -> list[PlainSpan]:
    """Every span of an OTLP/JSON ``ExportTraceServiceRequest``, checked whole before returned.

    Raises :class:`MalformedPayload` naming the first wrong field by its path.
    """
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedPayload("not JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise MalformedPayload(f"not JSON: {error}") from None
    if type(document) is not dict:
        raise MalformedPayload(
            f"not an OTLP ExportTraceServiceRequest: expected a JSON object, {_got(document)}"
        )
    result: list[PlainSpan] = []
    try:
        resource_spans_list = _field(document, "resourceSpans", "resource_spans")
        if resource_spans_list is not None:
            for index, resource_spans in enumerate(_array(resource_spans_list, "resourceSpans")):
                try:
                    _resource_spans(resource_spans, result)
                except _Invalid as bad:
                    raise bad.within(f"resourceSpans[{index}]") from None
    except _Invalid as bad:
        raise MalformedPayload(f"{bad.where()}: {bad.message}") from None
    return result


def export_response_json(rejected: int, message: str = "") -> bytes:
    """An OTLP/JSON ``ExportTraceServiceResponse``: ``{}``, or ``partialSuccess`` when spans
    were rejected (``rejectedSpans`` is an int64, so a string)."""
    if not rejected:
        return b"{}"
    partial: dict[str, str] = {"rejectedSpans": str(rejected)}
    if message:
        partial["errorMessage"] = message
    return json.dumps({"partialSuccess": partial}, separators=(",", ":")).encode()
