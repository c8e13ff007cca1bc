"""OTLP/HTTP trace ingest, independent of the web framework: body in, committed rows out.

The body is binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
gzip-compressed or not, and the answer is an ``ExportTraceServiceResponse`` in the request's
encoding. A malformed body is refused whole: nothing of it is stored.

Errors subclass the builtin that matches and carry the HTTP status the API answers with:

    IngestError (ValueError)
     ├── MalformedPayload      400  not an OTLP export request in protobuf or OTLP/JSON
     ├── UnsupportedMediaType  415  neither application/x-protobuf nor application/json
     └── PayloadTooLarge       413  body or decompressed body over the limit
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from sqlalchemy import Engine

from p402.ledger.events import insert_events
from p402.receiver import otlp
from p402.receiver.conversion import convert_spans
from p402.receiver.policy import ingest_policy

__all__ = [
    "JSON",
    "MAX_BODY_BYTES",
    "IngestError",
    "IngestResult",
    "MalformedPayload",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "ingest_traces",
]

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"


class IngestError(ValueError):
    status_code = 400
    code = "bad_request"


class MalformedPayload(IngestError):
    code = "malformed_payload"


class UnsupportedMediaType(IngestError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(IngestError):
    status_code = 413
    code = "payload_too_large"


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    inserted: int
    ignored: int
    rejected: int
    message: str
    media_type: str = PROTOBUF
    """The encoding of the request, and so of :meth:`otlp_response`."""

    def otlp_response(self) -> bytes:
        if self.media_type == JSON:
            return otlp.export_response_json(self.rejected, self.message)
        return otlp.export_response(self.rejected, self.message)

    def counts(self) -> dict[str, str]:
        """What became of the request's spans, as the headers (HTTP) or trailing metadata
        (gRPC) of the answer: the LLM spans accepted, of them the new events, the other spans
        ignored, and the LLM spans rejected (which ``partial_success`` explains)."""
        return {
            "x-p402-spans-accepted": str(self.accepted),
            "x-p402-events-inserted": str(self.inserted),
            "x-p402-spans-ignored": str(self.ignored),
            "x-p402-spans-rejected": str(self.rejected),
        }


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r} (use gzip)")
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise MalformedPayload(f"invalid gzip body: {error}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
    return data


def ingest_traces(
    engine: Engine,
    tenant_id: int,
    body: bytes,
    *,
    content_type: str,
    content_encoding: str = "",
    limit: int = MAX_BODY_BYTES,
    signing_key: bytes | None = None,
) -> IngestResult:
    """Decode, convert and durably store one OTLP export request for ``tenant_id``.

    ``signing_key`` verifies signed events (the SHA-256 of the API key that sent them).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type!r} (use {PROTOBUF} or {JSON})"
        )
    if len(body) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    data = _decompress(body, content_encoding, limit)
    try:
        # JSON is decoded whole here; protobuf is parsed whole here and walked lazily after
        spans: Iterable[otlp.PlainSpan] = (
            otlp.parse_json(data) if media_type == JSON else otlp.spans(otlp.parse_protobuf(data))
        )
    except otlp.MalformedPayload as error:
        raise MalformedPayload(str(error)) from None
    policy = replace(ingest_policy(engine, tenant_id), signing_key=signing_key)
    conversion = convert_spans(spans, policy)
    inserted = insert_events(engine, tenant_id, conversion.records)
    return IngestResult(
        accepted=len(conversion.records),
        inserted=inserted,
        ignored=conversion.ignored,
        rejected=conversion.rejected,
        message="; ".join(conversion.errors),
        media_type=media_type,
    )
