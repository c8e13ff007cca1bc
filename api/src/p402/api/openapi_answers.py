"""The 200 answers of ``/schema`` for routes that answer in other media types than JSON (an
export, a receipt as PDF or CSV), with the headers they send, put into the route's OpenAPI
operation by its ``operation_class``::

    @get("/v1/export", operation_class=EXPORT.operation_class)

The handlers choose the media type as before: this module only documents it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)

from p402.instrumentation.vocabulary import EXPORT_MEDIA_TYPES, TOTAL_EVENTS_HEADER

__all__ = ["EXPORT", "RECEIPT", "DocumentedAnswer"]

CSV: Final = EXPORT_MEDIA_TYPES["csv"]
JSON: Final = "application/json"
PDF: Final = "application/pdf"
ZIP: Final = EXPORT_MEDIA_TYPES["bundle"]


@dataclass(frozen=True)
class DocumentedAnswer:
    """A route's 200 answer for ``/schema``: its schema per media type, and its headers."""

    content: Mapping[str, Schema]
    headers: Mapping[str, str] = field(default_factory=dict)
    """Each header the answer carries, with what it says."""

    @cached_property
    def operation_class(self) -> type[Operation]:
        """The route's ``operation_class``: its operation with this answer."""
        documented = self

        @dataclass
        class AnsweredOperation(Operation):
            def __post_init__(self) -> None:
                documented._document(self)

        return AnsweredOperation

    def _document(self, operation: Operation) -> None:
        ok = (operation.responses or {}).get("200")
        if not isinstance(ok, OpenAPIResponse):
            return
        ok.content = {
            media_type: OpenAPIMediaType(schema=schema)
            for media_type, schema in self.content.items()
        }
        ok.headers = {
            **(ok.headers or {}),
            **{
                name: OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=meaning)
                for name, meaning in self.headers.items()
            },
        }


def _file(media_type: str, description: str) -> Schema:
    binary = media_type not in (CSV, JSON)
    return Schema(
        type=OpenAPIType.STRING,
        format=OpenAPIFormat.BINARY if binary else None,
        content_media_type=media_type,
        description=description,
    )


EXPORT: Final = DocumentedAnswer(
    content={
        CSV: _file(CSV, "format=csv (the event fields) or format=focus (FOCUS 1.2), UTF-8"),
        ZIP: _file(ZIP, "format=bundle: events.csv, events.json, summary.json, manifest.json"),
    },
    headers={TOTAL_EVENTS_HEADER: "how many events the export holds"},
)
RECEIPT: Final = DocumentedAnswer(
    content={
        JSON: Schema(type=OpenAPIType.OBJECT, description="the receipt"),
        PDF: _file(PDF, "a one-page PDF: a .pdf suffix, or Accept: application/pdf"),
        CSV: _file(CSV, "one row: a .csv suffix, or Accept: text/csv"),
    }
)
