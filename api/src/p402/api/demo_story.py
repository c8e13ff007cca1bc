"""Acme Corp, the organisation ``p402 demo`` sets up: departments, people, projects, policies,
budgets, and a month of history.

Everything here is data and arithmetic, deterministic for a given day (a seeded generator):
the demo module sends it through the API. History events are priced by the receiver from
their token counts, like any meter-only event; the budget caps are set from what the history
spends, so that the alerts the demo promises fire whatever the price data says.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from p402.instrumentation.ids import new_event_id
from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.usage import TokenUsage

__all__ = [
    "ANOMALOUS_SESSION",
    "ENGAGEMENT",
    "ENGAGEMENT_CAP_USD",
    "MARKETING_CONSUMED",
    "POLICIES",
    "TENANT",
    "history",
]

TENANT: Final = "Acme Corp"
ENGAGEMENT: Final = "globex-engagement"
"""Engineering's client engagement for Globex, capped at $50 whatever the department has."""
ENGAGEMENT_CAP_USD: Final = Decimal(50)
ANOMALOUS_SESSION: Final = "bob-incident-review"
"""Today's session of Bob's that costs many times his usual session."""
MARKETING_CONSUMED: Final = Decimal("0.92")
"""How much of its monthly cap Marketing's history consumes: past the 80 % and 90 % alerts."""

POLICIES: Final = (
    {"department": "Engineering", "routing": "quality-first"},
    {"department": "Legal", "min_model": "claude-sonnet-4-5", "routing": "compliance-aware"},
    {"department": "Marketing", "max_model": "claude-sonnet-4-5", "routing": "cost-first"},
    {"department": "Finance", "max_model": "gpt-4.1-mini", "routing": "cost-first"},
)


@dataclass(frozen=True, slots=True)
class _Team:
    department: str
    employees: tuple[str, ...]
    projects: tuple[tuple[str, str | None], ...]  # (project, client)
    workflows: tuple[tuple[str, str], ...]  # (workflow, task type)
    models: tuple[tuple[str, str], ...]  # (provider, model)
    sessions_per_day: int


_TEAMS: Final = (
    _Team(
        "Engineering",
        ("dana", "bob", "eve"),
        (("checkout", None), ("platform", None)),
        (("code-review", "code_review"), ("incident-triage", "triage")),
        (("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5-mini")),
        4,
    ),
    _Team(
        "Marketing",
        ("marco", "mia"),
        (("autumn-launch", None),),
        (("copywriting", "copy"), ("campaign-analysis", "analysis")),
        (("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4.1-mini")),
        3,
    ),
    _Team(
        "Legal",
        ("alice", "leo"),
        (("phoenix", None),),
        (("contract-review", "contract_analysis"),),
        (("anthropic", "claude-sonnet-4-5"),),
        2,
    ),
    _Team(
        "Finance",
        ("farid",),
        (("month-end-close", None),),
        (("variance-analysis", "analysis"),),
        (("openai", "gpt-4.1-mini"), ("openai", "gpt-5-mini")),
        1,
    ),
)


def _event(
    rng: random.Random,
    at: datetime,
    team: _Team,
    employee: str,
    project: tuple[str, str | None],
    session: str,
    scale: int = 1,
) -> dict[str, Any]:
    workflow, task_type = rng.choice(team.workflows)
    provider, model = rng.choice(team.models)
    cache_read = rng.choice((0, 0, 4096))
    return {
        "id": new_event_id(),
        "timestamp": at.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "provider": provider,
        "operation": "chat",
        "model_requested": model,
        "model_used": model,
        "input_tokens": rng.randint(6_000, 30_000) * scale + cache_read,
        "cache_read_tokens": cache_read,
        "output_tokens": rng.randint(400, 2_500) * scale,
        "usage_evidence": "provider_response",
        "department": team.department,
        "project": project[0],
        "client": project[1],
        "employee": employee,
        "session": session,
        "workflow": workflow,
        "task_type": task_type,
        "outcome": rng.choice(("accepted", "accepted", "accepted", "revised", "rejected")),
    }


def _cost(event: dict[str, Any]) -> Decimal:
    usage = TokenUsage(
        input_tokens=event["input_tokens"],
        output_tokens=event["output_tokens"],
        cache_read_tokens=event["cache_read_tokens"],
        cache_write_tokens=0,
        reasoning_tokens=0,
    )
    cost = compute_cost(
        usage,
        model=event["model_used"],
        provider=event["provider"],
        at=datetime.fromisoformat(event["timestamp"]),
    )
    if cost is None:
        raise LookupError(f"the price data has no price for {event['model_used']}")
    return cost


def history(now: datetime, *, days: int = 30, seed: int = 402) -> Iterator[dict[str, Any]]:
    """A month of Acme's events before ``now``, as ``POST /v1/events`` takes them: every
    team's sessions, the Globex engagement spending past its cap this month, and today one
    session of Bob's far above his usual."""
    rng = random.Random(seed)
    start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(days):
        date = start + timedelta(days=day)
        for team in _TEAMS:
            for number in range(team.sessions_per_day):
                employee = rng.choice(team.employees)
                project = rng.choice(team.projects)
                begins = date + timedelta(hours=8 + rng.randint(0, 9), minutes=rng.randint(0, 59))
                if begins > now - timedelta(hours=1):
                    continue
                session = f"{employee}-{begins:%m%d}-{number}"
                for call in range(rng.randint(2, 5)):
                    at = begins + timedelta(minutes=3 * call)
                    yield _event(rng, at, team, employee, project, session)
    yield from _engagement(rng, now)
    engineering = _TEAMS[0]
    incident = now - timedelta(minutes=50)
    for call in range(12):
        at = incident + timedelta(minutes=2 * call)
        yield _event(rng, at, engineering, "bob", ("platform", None), ANOMALOUS_SESSION, scale=4)


def _engagement(rng: random.Random, now: datetime) -> Iterator[dict[str, Any]]:
    """Globex engagement calls this month, until they have spent just past the cap."""
    engineering = _TEAMS[0]
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max((now - month_start).total_seconds() - 7200, 3600)
    spent = Decimal(0)
    number = 0
    while spent <= ENGAGEMENT_CAP_USD:
        at = month_start + timedelta(seconds=span * rng.random())
        employee = rng.choice(("dana", "eve"))
        session = f"globex-{employee}-{at:%m%d}"
        event = _event(rng, at, engineering, employee, (ENGAGEMENT, "Globex"), session)
        spent += _cost(event)
        number += 1
        yield event
