"""OTLP/HTTP trace ingest, independent of the web framework: body in, committed rows out.

Errors subclass the builtin that matches and carry the HTTP status the API answers with:

    IngestError (ValueError)
     ├── MalformedPayload      400  not valid protobuf
     ├── UnsupportedMediaType  415  neither application/x-protobuf nor application/json
     └── PayloadTooLarge       413  body or decompressed body over the limit
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, select

from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.events import insert_events
from p402.ledger.models import Tenant
from p402.receiver import otlp
from p402.receiver.conversion import convert_spans

__all__ = [
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
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


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

    def otlp_response(self) -> bytes:
        return otlp.export_response(self.rejected, self.message)


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


def _tenant_privacy(engine: Engine, tenant_id: int) -> PrivacyMode:
    with engine.connect() as connection:
        mode = connection.execute(
            select(_TENANTS.c.max_privacy_mode).where(_TENANTS.c.id == tenant_id)
        ).scalar_one()
    return PrivacyMode(mode)


def ingest_traces(
    engine: Engine,
    tenant_id: int,
    body: bytes,
    *,
    content_type: str,
    content_encoding: str = "",
    limit: int = MAX_BODY_BYTES,
) -> IngestResult:
    """Decode, convert and durably store one OTLP export request for ``tenant_id``."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != PROTOBUF:
        raise UnsupportedMediaType(f"unsupported Content-Type {media_type!r} (use {PROTOBUF})")
    if len(body) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    data = _decompress(body, content_encoding, limit)
    try:
        request = otlp.parse_protobuf(data)
    except otlp.MalformedPayload as error:
        raise MalformedPayload(str(error)) from None
    conversion = convert_spans(otlp.spans(request), _tenant_privacy(engine, tenant_id))
    inserted = insert_events(engine, tenant_id, conversion.records)
    return IngestResult(
        accepted=len(conversion.records),
        inserted=inserted,
        ignored=conversion.ignored,
        rejected=conversion.rejected,
        message="; ".join(conversion.errors),
    )
