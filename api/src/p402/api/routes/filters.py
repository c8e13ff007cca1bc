"""Query parameters shared by the event and spend routes: filters, time range, paging."""

from __future__ import annotations

from typing import Annotated, Final

from litestar.params import Parameter, QueryParameter

from p402.api.errors import ApiError
from p402.instrumentation.vocabulary import (
    CostEvidence,
    EvidenceStatus,
    Outcome,
    PolicyResult,
    PrivacyMode,
    UsageEvidence,
)
from p402.ledger.clock import from_iso
from p402.ledger.events import EventFilter

__all__ = [
    "FILTER_TEXT",
    "MAX_LIMIT",
    "Cursor",
    "Limit",
    "RangeEnd",
    "RangeStart",
    "TextFilter",
    "parse_range",
    "parse_time",
    "provide_event_filter",
]

MAX_LIMIT = 1000
Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT)]
"""A list's ``limit``: at most ``MAX_LIMIT`` items a page (the routes default to 100)."""
Cursor = Annotated[str | None, Parameter(required=False)]
"""A list's ``cursor``: the ``next_cursor`` of the page before."""

FILTER_TEXT: Final = "^[^\\x00]+$"
TextFilter = Annotated[str | None, Parameter(required=False, pattern=FILTER_TEXT)]
"""A filter on a stored text: any text but the empty one and NUL (U+0000), which no stored
value holds (a missing value is stored as none, and PostgreSQL's text cannot bind NUL):
answered 400, where it would match no event, or, read from the rollups, the events without
that owner."""

RangeStart = Annotated[
    str | None,
    QueryParameter(name="from", required=False, description="ISO-8601 start (inclusive)"),
]
RangeEnd = Annotated[str | None, Parameter(required=False, description="ISO-8601 end (exclusive)")]


def parse_time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return from_iso(value)
    except ValueError as error:
        raise ApiError(400, "invalid_parameter", f"{name}: {error}") from None


def parse_range(from_: str | None, to: str | None) -> tuple[int | None, int | None]:
    """``from`` and ``to`` in epoch ms; a range that ends before it starts is a 400."""
    from_ms, to_ms = parse_time(from_, "from"), parse_time(to, "to")
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise ApiError(
            400, "invalid_parameter", f"from must be before to, not after ({from_}, {to})"
        )
    return from_ms, to_ms


def provide_event_filter(
    department: TextFilter = None,
    project: TextFilter = None,
    client: TextFilter = None,
    employee: TextFilter = None,
    session: TextFilter = None,
    workflow: TextFilter = None,
    feature: TextFilter = None,
    customer: TextFilter = None,
    task_type: TextFilter = None,
    model: Annotated[
        str | None,
        Parameter(required=False, pattern=FILTER_TEXT, description="the model actually used"),
    ] = None,
    model_requested: TextFilter = None,
    provider: TextFilter = None,
    operation: TextFilter = None,
    outcome: Annotated[Outcome | None, Parameter(required=False)] = None,
    usage_evidence: Annotated[UsageEvidence | None, Parameter(required=False)] = None,
    cost_evidence: Annotated[CostEvidence | None, Parameter(required=False)] = None,
    evidence_status: Annotated[EvidenceStatus | None, Parameter(required=False)] = None,
    policy_result: Annotated[PolicyResult | None, Parameter(required=False)] = None,
    privacy_mode: Annotated[PrivacyMode | None, Parameter(required=False)] = None,
    from_: RangeStart = None,
    to: RangeEnd = None,
) -> EventFilter:
    given = {
        "department": department,
        "project": project,
        "client": client,
        "employee": employee,
        "session": session,
        "workflow": workflow,
        "feature": feature,
        "customer": customer,
        "task_type": task_type,
        "model": model,
        "model_requested": model_requested,
        "provider": provider,
        "operation": operation,
        "outcome": outcome,
        "usage_evidence": usage_evidence,
        "cost_evidence": cost_evidence,
        "evidence_status": evidence_status,
        "policy_result": policy_result,
        "privacy_mode": privacy_mode,
    }
    from_ms, to_ms = parse_range(from_, to)
    return EventFilter(
        # (an enumeration's member is its value, a str)
        equals={name: str(value) for name, value in given.items() if value is not None},
        from_ms=from_ms,
        to_ms=to_ms,
    )
