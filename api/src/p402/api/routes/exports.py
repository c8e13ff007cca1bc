"""``GET /v1/export``: a tenant's events as CSV, as a FOCUS CSV, or as a finance bundle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from litestar import get
from litestar.params import QueryParameter
from litestar.response import Stream
from sqlalchemy import Engine

from p402.api.dependencies import CallerIdentity, LedgerEngine, QueryFilter
from p402.api.openapi_answers import EXPORT
from p402.instrumentation.vocabulary import EXPORT_MEDIA_TYPES, TOTAL_EVENTS_HEADER
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.events import EventFilter, spend
from p402.ledger.exports import event_pages, events_csv, finance_bundle, focus_csv
from p402.ledger.keys import tenant_name

__all__ = ["get_export"]

"""How many events the export holds (counted before it streams): what progress is shown of."""

_SUFFIXES = {"csv": "events.csv", "focus": "focus.csv", "bundle": "finance-bundle.zip"}


def filters_json(event_filter: EventFilter) -> dict[str, Any]:
    """The filters of an export, as its manifest records them."""
    shown: dict[str, Any] = dict(event_filter.equals)
    if event_filter.from_ms is not None:
        shown["from"] = to_iso(event_filter.from_ms)
    if event_filter.to_ms is not None:
        shown["to"] = to_iso(event_filter.to_ms)
    return shown


def _total_events(engine: Engine, tenant_id: int, event_filter: EventFilter) -> int:
    with engine.connect() as connection:
        _, total = spend(connection, tenant_id, event_filter, [])
    return int(total["events"])


@get(
    "/v1/export",
    opt={"role": "read"},
    tags=["exports"],
    sync_to_thread=True,
    operation_class=EXPORT.operation_class,
)
def get_export(
    engine: LedgerEngine,
    identity: CallerIdentity,
    event_filter: QueryFilter,
    export_format: Annotated[
        Literal["csv", "bundle", "focus"],
        QueryParameter(
            name="format",
            description="csv (the event fields), focus (FinOps FOCUS 1.2), or bundle (a zip "
            "of events.csv, events.json, summary.json and manifest.json)",
        ),
    ] = "csv",
) -> Stream:
    """The events matching the same filters as ``GET /v1/events``, streamed newest first.

    ``csv``: one row per event, the event fields of ``GET /v1/events`` as columns, money as
    decimal strings. ``focus``: a FinOps FOCUS 1.2 cost and usage CSV, token usage in
    ``ConsumedQuantity`` (``Tokens``), P402's owners and evidence in ``x_`` columns.
    ``bundle``: a zip for finance with ``events.csv``, ``events.json``, ``summary.json``
    (totals per department, project, provider and model) and ``manifest.json`` (SHA-256 and
    size of each file). The ``x-p402-total-events`` header says how many events follow.
    """
    tenant_id = identity.tenant_id
    pages = event_pages(engine, tenant_id, event_filter)
    content: Iterator[bytes]
    if export_format == "csv":
        content = events_csv(pages)
    elif export_format == "focus":
        content = focus_csv(
            pages, account_id=str(tenant_id), account_name=tenant_name(engine, tenant_id)
        )
    else:
        content = finance_bundle(
            pages, tenant=tenant_name(engine, tenant_id), filters=filters_json(event_filter)
        )
    day = to_iso(now_ms())[:10]
    return Stream(
        content,
        media_type=EXPORT_MEDIA_TYPES[export_format],
        headers={
            "content-disposition": f'attachment; filename="p402-{day}-{_SUFFIXES[export_format]}"',
            TOTAL_EVENTS_HEADER: str(_total_events(engine, tenant_id, event_filter)),
        },
    )
