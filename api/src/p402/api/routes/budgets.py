"""``GET|PUT /v1/budgets``: caps per scope and period with where each stands;
``GET /v1/projections``: where each is heading by the end of its period."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, get, put
from litestar.datastructures import State

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import BUDGETS
from p402.api.routes.filters import Cursor, Limit
from p402.api.routes.json_bodies import json_items
from p402.instrumentation.money import from_picos, usd_str
from p402.ledger import clock
from p402.ledger.budgets import BudgetSpec, BudgetState, InvalidBudget, budget_states, put_budgets

__all__ = [
    "MAX_CAP_PICOS",
    "budget_json",
    "get_budgets",
    "get_projections",
    "json_items",
    "put_budget",
]

MAX_CAP_PICOS: Final = 2**63 - 1
"""The largest cap the ledger's 64-bit column holds, in picodollars (about 9.2 million USD)."""


def _usd(picos: int) -> str:
    return usd_str(from_picos(picos))


def budget_json(state: BudgetState) -> dict[str, Any]:
    """A budget as the API shows it (SPEC §9), with its figures for the current period."""
    return {
        "id": state.budget_id,
        "scope": state.scope.value,
        "name": state.name,
        "period": state.period.value,
        "cap_usd": _usd(state.cap_picos),
        "action_at_cap": state.action_at_cap.value,
        "downgrade_model": state.downgrade_model,
        "spent_usd": _usd(state.spent_picos),
        "held_usd": _usd(state.held_picos),
        "remaining_usd": _usd(state.remaining_picos),
        "consumed_pct": float(state.consumed_pct),
        "projected_usd": _usd(state.projected_picos),
        "status": state.status.value,
        "period_start": clock.to_iso(state.period_start_ms),
        "period_end": clock.to_iso(state.period_end_ms),
    }


def _projection_json(state: BudgetState) -> dict[str, Any]:
    return {
        "budget_id": state.budget_id,
        "scope": state.scope.value,
        "name": state.name,
        "period": state.period.value,
        "period_start": clock.to_iso(state.period_start_ms),
        "period_end": clock.to_iso(state.period_end_ms),
        "spent_usd": _usd(state.spent_picos),
        "velocity_usd_per_day": _usd(state.velocity_picos_per_day),
        "projected_usd": _usd(state.projected_picos),
        "cap_usd": _usd(state.cap_picos),
        "overage_usd": _usd(state.overage_picos) if state.overage_picos else None,
        "projected_over": state.overage_picos > 0,
    }


def _after(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise ApiError(400, "invalid_cursor", f"invalid cursor: {cursor!r}")
    return int(cursor)


def _page(
    engine: LedgerEngine, tenant_id: int, limit: int, cursor: str | None
) -> tuple[list[BudgetState], str | None]:
    with engine.connect() as connection:
        states = budget_states(
            connection, tenant_id, clock.now_ms(), after_id=_after(cursor), limit=limit + 1
        )
    if len(states) > limit:
        return states[:limit], str(states[limit - 1].budget_id)
    return states, None


@get("/v1/budgets", opt={"role": "read"}, tags=["budgets"], sync_to_thread=True)
def get_budgets(
    engine: LedgerEngine, identity: CallerIdentity, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """The tenant's budgets with ``spent_usd``, ``held_usd``, ``remaining_usd``,
    ``consumed_pct``, ``projected_usd`` and ``status`` for the current UTC period."""
    states, next_cursor = _page(engine, identity.tenant_id, limit, cursor)
    return {"data": [budget_json(state) for state in states], "next_cursor": next_cursor}


@get("/v1/projections", opt={"role": "read"}, tags=["budgets"], sync_to_thread=True)
def get_projections(
    engine: LedgerEngine, identity: CallerIdentity, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Per budget: spent so far, velocity per day, the end-of-period projection
    (``spent * period length / elapsed``), the cap, and the overage when it passes the cap."""
    states, next_cursor = _page(engine, identity.tenant_id, limit, cursor)
    return {"data": [_projection_json(state) for state in states], "next_cursor": next_cursor}


def _budget_spec(item: object) -> BudgetSpec:
    spec = BudgetSpec.from_json(item)
    if spec.cap_picos > MAX_CAP_PICOS:
        raise InvalidBudget(f"cap_usd: at most {_usd(MAX_CAP_PICOS)}")
    return spec


def _put_budget_list(engine: LedgerEngine, tenant_id: int, items: list[Any]) -> list[BudgetState]:
    """Check every budget, then write them all in one transaction."""
    specs = []
    for number, item in enumerate(items, start=1):
        try:
            specs.append(_budget_spec(item))
        except InvalidBudget as error:
            where = f"budget {number}: " if len(items) > 1 else ""
            raise ApiError(400, "invalid_budget", f"{where}{error}") from None
    now = clock.now_ms()
    with engine.begin() as connection:
        ids = set(put_budgets(connection, tenant_id, specs, now))
        return [s for s in budget_states(connection, tenant_id, now) if s.budget_id in ids]


@put(
    "/v1/budgets",
    opt={"role": "admin"},
    tags=["budgets"],
    status_code=200,
    operation_class=BUDGETS.operation_class,
    responses=BUDGETS.responses,
)
async def put_budget(
    request: Request[object, object, State], engine: LedgerEngine, identity: CallerIdentity
) -> dict[str, Any]:
    """Create or replace one budget or a list of them, matched by ``(scope, name, period)``:
    ``scope`` (``organization``, ``department``, ``project``, ``employee``, ``session``),
    ``name`` (none for the organisation), ``period`` (``month``, ``week``, ``day``),
    ``cap_usd`` (a decimal string), ``action_at_cap`` (``block``, ``downgrade``, ``notify``,
    the default) and ``downgrade_model``. Answers the budgets written, with their figures."""
    items = json_items(await request.body())
    states = await request.app.state.run_sync(_put_budget_list, engine, identity.tenant_id, items)
    return {"data": [budget_json(state) for state in states], "next_cursor": None}
