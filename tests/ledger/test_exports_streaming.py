"""Exports stream: each page of events is written out before the next one is read."""

from __future__ import annotations

import io
import json
import zipfile

from p402.ledger.events import EVENT_FIELDS
from p402.ledger.exports import events_csv, finance_bundle, focus_csv


def _event(n: int) -> dict[str, object]:
    event: dict[str, object] = dict.fromkeys(EVENT_FIELDS)
    event.update(
        id=f"ev-{n}",
        timestamp="2026-11-20T09:30:00.000Z",
        provider="openai",
        model_used="gpt-5-mini-2025-08-07",
        input_tokens=10,
        output_tokens=5,
        cost_usd="0.000001",
        department="legal",
    )
    return event


class _Pages:
    """Three pages of two events, counting how many have been read."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self):
        for page in range(3):
            self.read += 1
            yield [_event(2 * page), _event(2 * page + 1)]


def test_csv_and_focus_write_each_page_before_reading_the_next():
    for export in (events_csv, lambda pages: focus_csv(pages, account_id="1", account_name="a")):
        pages = _Pages()
        chunks = export(pages)
        next(chunks)  # the header
        assert pages.read == 0
        next(chunks)
        assert pages.read == 1
        assert len(list(chunks)) == 2 and pages.read == 3


def test_the_bundle_streams_the_csv_while_it_reads_the_ledger():
    pages = _Pages()
    chunks = finance_bundle(pages, tenant="acme", filters={})
    received = []
    while pages.read < 2:
        received.append(next(chunks))
    assert pages.read == 2  # the zip was already being written with one page still unread
    received.extend(chunks)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(received)))
    assert len(json.loads(archive.read("events.json"))) == 6
    assert json.loads(archive.read("summary.json"))["total"]["cost_usd"] == "0.000006"
