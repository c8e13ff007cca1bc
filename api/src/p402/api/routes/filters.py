"""Query parameters shared by the event and spend routes: filters, time range, paging."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter, QueryParameter

from p402.api.errors import ApiError
from p402.ledger.clock import from_iso
from p402.ledger.events import EventFilter

__all__ = ["MAX_LIMIT", "RangeEnd", "RangeStart", "parse_time", "provide_event_filter"]

MAX_LIMIT = 1000

_Text = Annotated[str | None, Parameter(required=False)]
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


def provide_event_filter(
    department: _Text = None,
    project: _Text = None,
    client: _Text = None,
    employee: _Text = None,
    session: _Text = None,
    workflow: _Text = None,
    feature: _Text = None,
    customer: _Text = None,
    task_type: _Text = None,
    model: Annotated[
        str | None, Parameter(required=False, description="the model actually used")
    ] = None,
    model_requested: _Text = None,
    provider: _Text = None,
    operation: _Text = None,
    outcome: _Text = None,
    usage_evidence: _Text = None,
    cost_evidence: _Text = None,
    evidence_status: _Text = None,
    policy_result: _Text = None,
    privacy_mode: _Text = None,
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
    return EventFilter(
        equals={name: value for name, value in given.items() if value is not None},
        from_ms=parse_time(from_, "from"),
        to_ms=parse_time(to, "to"),
    )
