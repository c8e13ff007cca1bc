"""Exports of a tenant's events: CSV, FOCUS CSV and the finance bundle, streamed.

Every export walks the events with the same filters and keyset pages as ``GET /v1/events``
(newest first, :data:`PAGE_ROWS` at a time), so no export holds the ledger in memory, and
writes each page as one chunk. Money stays the decimal strings of the event JSON.

The finance bundle is a zip of ``events.csv``, ``events.json`` (the same events, as a JSON
array), ``summary.json`` (spend totals and per department, project, provider and model,
summed exactly from the exported rows) and ``manifest.json`` (the SHA-256 and size of each
other file). All four come from one pass over the ledger, so they always agree: the JSON
copy is spooled to a temporary file while the CSV streams.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any, Final

from sqlalchemy import Engine

from p402.instrumentation.money import usd_str
from p402.instrumentation.vocabulary import EXPORT_FORMATS
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.events import EVENT_FIELDS, EventFilter, list_events
from p402.ledger.focus import FOCUS_COLUMNS, focus_row

__all__ = [
    "BUNDLE_FILES",
    "EXPORT_FORMATS",
    "PAGE_ROWS",
    "csv_lines",
    "event_pages",
    "events_csv",
    "finance_bundle",
    "focus_csv",
]

PAGE_ROWS: Final = 1000
BUNDLE_FILES: Final = ("events.csv", "events.json", "summary.json", "manifest.json")
_SUMMARY_DIMENSIONS: Final = ("department", "project", "provider", "model_used")

Page = list[dict[str, Any]]


def event_pages(
    engine: Engine, tenant_id: int, event_filter: EventFilter, *, page_rows: int = PAGE_ROWS
) -> Iterator[Page]:
    """The tenant's matching events, newest first, one page of event JSON at a time."""
    cursor: str | None = None
    while True:
        with engine.connect() as connection:
            page = list_events(connection, tenant_id, event_filter, limit=page_rows, cursor=cursor)
        if page.data:
            yield page.data
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def csv_lines(rows: Iterable[Sequence[object]]) -> bytes:
    """CSV (RFC 4180, CRLF line ends) of ``rows``; ``None`` is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return buffer.getvalue().encode()


def _event_cells(event: Mapping[str, Any]) -> list[object]:
    return [event[name] for name in EVENT_FIELDS]


def events_csv(pages: Iterable[Page]) -> Iterator[bytes]:
    """A CSV of events: a header of the event fields, then one row per event."""
    yield csv_lines([EVENT_FIELDS])
    for page in pages:
        yield csv_lines(_event_cells(event) for event in page)


def focus_csv(pages: Iterable[Page], *, account_id: str, account_name: str) -> Iterator[bytes]:
    """A FOCUS 1.2 cost and usage CSV (see :mod:`p402.ledger.focus`)."""
    yield csv_lines([FOCUS_COLUMNS])
    for page in pages:
        yield csv_lines(focus_row(event, account_id, account_name) for event in page)


# --- the finance bundle --------------------------------------------------------------------


@dataclass(slots=True)
class _Totals:
    cost: Decimal = Decimal(0)
    events: int = 0
    unpriced_events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, event: Mapping[str, Any]) -> None:
        self.events += 1
        if event["cost_usd"] is None:
            self.unpriced_events += 1
        else:
            self.cost += Decimal(event["cost_usd"])
        self.input_tokens += event["input_tokens"] or 0
        self.output_tokens += event["output_tokens"] or 0

    def json(self) -> dict[str, Any]:
        return {
            "cost_usd": usd_str(self.cost),
            "events": self.events,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "unpriced_events": self.unpriced_events,
        }


@dataclass(slots=True)
class _Summary:
    total: _Totals = field(default_factory=_Totals)
    groups: dict[str, dict[str | None, _Totals]] = field(
        default_factory=lambda: {name: {} for name in _SUMMARY_DIMENSIONS}
    )

    def add(self, event: Mapping[str, Any]) -> None:
        self.total.add(event)
        for name, groups in self.groups.items():
            groups.setdefault(event[name], _Totals()).add(event)

    def json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"total": self.total.json()}
        for name, groups in self.groups.items():
            label = "model" if name == "model_used" else name
            shown[f"by_{label}"] = [
                {label: value, **totals.json()}
                for value, totals in sorted(
                    groups.items(), key=lambda item: (-item[1].cost, item[0] or "")
                )
            ]
        return shown


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


@dataclass(slots=True)
class _Digest:
    name: str
    sha256: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def update(self, data: bytes) -> bytes:
        self.sha256.update(data)
        self.size += len(data)
        return data

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.size, "sha256": self.sha256.hexdigest()}


def _json_array(target: IO[bytes], pages: Iterable[Page]) -> Iterator[Page]:
    """Pass ``pages`` through, writing their events to ``target`` as one JSON array."""
    first = True
    target.write(b"[")
    for page in pages:
        text = ",\n".join(json.dumps(event, separators=(", ", ": ")) for event in page)
        target.write((("\n" if first else ",\n") + text).encode())
        first = False
        yield page
    target.write(b"\n]\n" if not first else b"]\n")


def finance_bundle(
    pages: Iterable[Page], *, tenant: str, filters: Mapping[str, Any]
) -> Iterator[bytes]:
    """The finance bundle (a zip, see the module docstring) of the events in ``pages``."""
    generated_ms = now_ms()
    sink = _Sink()
    digests: list[_Digest] = []
    summary = _Summary()

    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_zip_time(generated_ms))
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    def write_file(archive: zipfile.ZipFile, name: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        digest = _Digest(name)
        digests.append(digest)
        with archive.open(entry(name), "w", force_zip64=True) as member:
            for chunk in chunks:
                member.write(digest.update(chunk))
                yield sink.take()
        yield sink.take()

    def counted(pages: Iterable[Page]) -> Iterator[Page]:
        for page in pages:
            for event in page:
                summary.add(event)
            yield page

    with (
        tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as spool,
        zipfile.ZipFile(sink, "w") as archive,
    ):
        yield from write_file(archive, "events.csv", events_csv(_json_array(spool, counted(pages))))
        spool.seek(0)
        yield from write_file(archive, "events.json", iter(lambda: spool.read(2**20), b""))
        yield from write_file(
            archive, "summary.json", [_pretty({"currency": "USD", **summary.json()})]
        )
        manifest = {
            "format": "p402-finance-bundle",
            "version": 1,
            "generated_at": to_iso(generated_ms),
            "tenant": tenant,
            "filters": dict(filters),
            "events": summary.total.events,
            "files": [digest.json() for digest in digests],
        }
        yield from write_file(archive, "manifest.json", [_pretty(manifest)])
    yield sink.take()


def _pretty(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()


def _zip_time(ms: int) -> tuple[int, int, int, int, int, int]:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
