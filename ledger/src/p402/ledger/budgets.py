"""Budgets: spending caps per scope and UTC calendar period, where each stands, and where it
is heading.

A budget caps the organisation, or one department, project, employee or session (its
``name``), per period: the UTC calendar month, the ISO week (from Monday 00:00 UTC) or the UTC
day. Its figures are computed for the period that contains ``now``, so they start again from
zero at every boundary by construction.

- **spent**: the cost of the events of the period, from the spend rollups (whole UTC days:
  periods begin and end at midnight UTC), never a scan of events. A session budget caps the
  session's whole cost (``session.cost_picos``), counted in a period when the session has an
  event in it (its last event at or after the period's start): a call in the session counts
  it whole, and a session that ended is not counted again in the periods after.
- **held**: what ``POST /v1/authorize`` has reserved for calls in flight
  (:mod:`p402.ledger.holds`).
- **projected**: ``spent + velocity * remaining``, with the velocity measured over the part of
  the period elapsed so far, i.e. ``projected = spent * length / elapsed`` with
  ``length = period_end - period_start`` and ``elapsed = max(now - period_start, length / 24)``
  (at least a 24th of the period — about 1.25 days of a 31-day month, 7 hours of a week, one
  hour of a day — so that the first minutes of a period do not project wildly), in integer
  picodollars rounded down. A session budget's projection is what it has spent.
- **consumed_pct**: ``spent * 100 / cap``, rounded down to 0.01 (a cap of 0 is 100 % used).
- **status**: ``exceeded`` when spent ≥ cap, else ``warning`` from 80 %, else
  ``projected_over`` when the projection passes the cap, else ``ok``.

Every figure of one call to :func:`budget_states` is read by one SQL statement, so it is one
consistent view (an ingest that adds an event's cost and drops its hold is seen whole or not
at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select

from p402.instrumentation.money import from_picos, parse_usd, to_picos
from p402.instrumentation.vocabulary import BudgetPeriod, BudgetScope, BudgetStatus, CapAction
from p402.ledger.models import Budget, BudgetHold, Session, SpendRollup
from p402.ledger.rollups import DAY_MS

__all__ = [
    "WARNING_PCT",
    "BudgetSpec",
    "BudgetState",
    "CoveringBudgets",
    "InvalidBudget",
    "budget_state",
    "budget_states",
    "covering_budgets",
    "period_bounds",
    "projected_picos",
    "put_budgets",
]

BUDGETS = Budget.__table__  # type: ignore[attr-defined]
HOLDS = BudgetHold.__table__  # type: ignore[attr-defined]
ROLLUPS = SpendRollup.__table__  # type: ignore[attr-defined]
SESSIONS = Session.__table__  # type: ignore[attr-defined]

WARNING_PCT: Final = Decimal(80)
_EPOCH: Final = date(1970, 1, 1)
_CENT: Final = Decimal("0.01")
_NAMED_BY_ROLLUP: Final = (BudgetScope.DEPARTMENT, BudgetScope.PROJECT, BudgetScope.EMPLOYEE)


# --- periods -------------------------------------------------------------------------------


def _day_ms(day: date) -> int:
    return (day - _EPOCH).days * DAY_MS


def period_bounds(period: BudgetPeriod, now_ms: int) -> tuple[int, int]:
    """The UTC calendar period containing ``now_ms``: ``[start, end)`` in epoch ms."""
    today = _EPOCH + timedelta(days=now_ms // DAY_MS)
    if period is BudgetPeriod.DAY:
        start, end = today, today + timedelta(days=1)
    elif period is BudgetPeriod.WEEK:
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    else:
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return _day_ms(start), _day_ms(end)


def projected_picos(spent_picos: int, start_ms: int, end_ms: int, now_ms: int) -> int:
    """The end-of-period projection (see the module docstring)."""
    length = end_ms - start_ms
    elapsed = max(now_ms - start_ms, length // 24)
    return spent_picos * length // elapsed


# --- writing budgets -----------------------------------------------------------------------


class InvalidBudget(ValueError):
    """A budget that cannot be stored, with the reason."""


def _choice(kind: type[Any], value: object, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidBudget(f"{field}: {value!r} is not one of {allowed}") from None


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A budget as written: upserted by ``(scope, name, period)``."""

    scope: BudgetScope
    name: str
    period: BudgetPeriod
    cap_picos: int
    action_at_cap: CapAction = CapAction.NOTIFY
    downgrade_model: str | None = None

    @classmethod
    def from_json(cls, item: object) -> BudgetSpec:
        """Read and check one budget of ``PUT /v1/budgets`` (SPEC §9 field names)."""
        if not isinstance(item, Mapping):
            raise InvalidBudget("a budget is a JSON object")
        unknown = set(item) - {
            "scope",
            "name",
            "period",
            "cap_usd",
            "action_at_cap",
            "downgrade_model",
        }
        if unknown:
            raise InvalidBudget(f"unknown field(s): {', '.join(sorted(unknown))}")
        scope = _choice(BudgetScope, item.get("scope"), "scope")
        name = item.get("name") or ""
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidBudget("name: a string of at most 200 characters")
        if scope is BudgetScope.ORGANIZATION and name:
            raise InvalidBudget("name: an organization budget has no name")
        if scope is not BudgetScope.ORGANIZATION and not name:
            raise InvalidBudget(f"name: a {scope.value} budget names its {scope.value}")
        period = _choice(BudgetPeriod, item.get("period") or BudgetPeriod.MONTH, "period")
        if "cap_usd" not in item:
            raise InvalidBudget("cap_usd: required (a decimal string of USD)")
        try:
            cap = parse_usd(item["cap_usd"])
        except ValueError as error:
            raise InvalidBudget(f"cap_usd: {error}") from None
        if cap < 0:
            raise InvalidBudget("cap_usd: must not be negative")
        if from_picos(to_picos(cap)) != cap:
            raise InvalidBudget(f"cap_usd: {item['cap_usd']} has more than 12 decimal places")
        action = _choice(CapAction, item.get("action_at_cap") or CapAction.NOTIFY, "action_at_cap")
        downgrade_model = item.get("downgrade_model") or None
        if downgrade_model is not None and (
            not isinstance(downgrade_model, str) or len(downgrade_model) > 200
        ):
            raise InvalidBudget("downgrade_model: a model name")
        if action is CapAction.DOWNGRADE and downgrade_model is None:
            raise InvalidBudget("downgrade_model: required when action_at_cap is downgrade")
        return cls(scope, name, period, to_picos(cap), action, downgrade_model)


def put_budgets(
    connection: Connection, tenant_id: int, specs: Sequence[BudgetSpec], now_ms: int
) -> list[int]:
    """Create or replace each budget (same scope, name and period); returns their ids."""
    insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert
    ids = []
    for spec in specs:
        values = {
            "tenant_id": tenant_id,
            "scope": spec.scope.value,
            "name": spec.name,
            "period": spec.period.value,
            "cap_picos": spec.cap_picos,
            "action_at_cap": spec.action_at_cap.value,
            "downgrade_model": spec.downgrade_model,
            "updated_ms": now_ms,
        }
        statement = insert(BUDGETS).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "scope", "name", "period"],
            set_={
                key: statement.excluded[key]
                for key in ("cap_picos", "action_at_cap", "downgrade_model", "updated_ms")
            },
        ).returning(BUDGETS.c.id)
        ids.append(int(connection.execute(statement).scalar_one()))
    return ids


# --- reading their state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget and its figures for the period containing ``now`` (picodollars, epoch ms)."""

    budget_id: int
    scope: BudgetScope
    name: str
    period: BudgetPeriod
    cap_picos: int
    spent_picos: int
    held_picos: int
    projected_picos: int
    period_start_ms: int
    period_end_ms: int
    action_at_cap: CapAction
    downgrade_model: str | None
    status: BudgetStatus
    consumed_pct: Decimal
    now_ms: int

    @property
    def remaining_picos(self) -> int:
        """What may still be spent: the cap less what is spent and held (not below 0)."""
        return max(self.cap_picos - self.spent_picos - self.held_picos, 0)

    @property
    def overage_picos(self) -> int:
        """How far the projection passes the cap (0 when it does not)."""
        return max(self.projected_picos - self.cap_picos, 0)

    @property
    def velocity_picos_per_day(self) -> int:
        """Spend per day over the elapsed part of the period (as the projection counts it)."""
        length = self.period_end_ms - self.period_start_ms
        elapsed = max(self.now_ms - self.period_start_ms, length // 24)
        return self.spent_picos * DAY_MS // elapsed


def _consumed_pct(spent: int, cap: int) -> Decimal:
    if cap <= 0:
        return Decimal(100)
    return (Decimal(spent) * 100 / cap).quantize(_CENT, rounding=ROUND_DOWN)


def _status(spent: int, cap: int, projected: int, consumed: Decimal) -> BudgetStatus:
    if spent >= cap:
        return BudgetStatus.EXCEEDED
    if consumed >= WARNING_PCT:
        return BudgetStatus.WARNING
    if projected > cap:
        return BudgetStatus.PROJECTED_OVER
    return BudgetStatus.OK


def _text(value: str) -> Any:
    return literal(value, String())


# The statements are built once per shape (which scopes and periods, which owners) with
# bound parameters: building SQL expressions costs more than running these small queries.


def _spent_query(scope: BudgetScope, period: BudgetPeriod, group: str) -> Select[Any]:
    head = (_text("spent"), _text(scope.value), _text(period.value))
    tenant: Any = bindparam("tenant")
    if scope is BudgetScope.SESSION:
        return select(*head, SESSIONS.c.name, SESSIONS.c.cost_picos).where(
            SESSIONS.c.tenant_id == tenant,
            SESSIONS.c.name.in_(bindparam(f"{group}_names", expanding=True)),
            SESSIONS.c.last_event_ms >= bindparam(f"{group}_start", type_=BigInteger) * DAY_MS,
        )
    conditions = [
        ROLLUPS.c.tenant_id == tenant,
        ROLLUPS.c.day >= bindparam(f"{group}_start"),
        ROLLUPS.c.day < bindparam(f"{group}_end"),
    ]
    total = func.coalesce(func.sum(ROLLUPS.c.cost_picos), 0)
    if scope is BudgetScope.ORGANIZATION:
        return select(*head, _text(""), total).where(and_(*conditions))
    column = ROLLUPS.c[scope.value]
    names = column.in_(bindparam(f"{group}_names", expanding=True))
    return select(*head, column, total).where(and_(*conditions, names)).group_by(column)


def _held_query(scope: BudgetScope, group: str) -> Select[Any]:
    head = (_text("held"), _text(scope.value), _text(""))
    conditions = [HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.expires_ms > bindparam("now")]
    total = func.coalesce(func.sum(HOLDS.c.amount_picos), 0)
    if scope is BudgetScope.ORGANIZATION:
        return select(*head, _text(""), total).where(and_(*conditions))
    column = HOLDS.c[scope.value]
    names = column.in_(bindparam(f"{group}_names", expanding=True))
    return select(*head, column, total).where(and_(*conditions, names)).group_by(column)


@lru_cache(maxsize=256)
def _figures_statement(
    spent_groups: tuple[tuple[BudgetScope, BudgetPeriod], ...], held_scopes: tuple[BudgetScope, ...]
) -> Any:
    return union_all(
        *(_spent_query(scope, period, f"s{n}") for n, (scope, period) in enumerate(spent_groups)),
        *(_held_query(scope, f"h{n}") for n, scope in enumerate(held_scopes)),
    )


def _figures(
    connection: Connection, tenant_id: int, budgets: Iterable[Row[Any]], now_ms: int
) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
    """Spent per (scope, period, name) and held per (scope, name), in one statement."""
    spent_names: dict[tuple[BudgetScope, BudgetPeriod], set[str]] = {}
    held_names: dict[BudgetScope, set[str]] = {}
    for budget in budgets:
        scope = BudgetScope(budget.scope)
        spent_names.setdefault((scope, BudgetPeriod(budget.period)), set()).add(budget.name)
        held_names.setdefault(scope, set()).add(budget.name)
    spent: dict[tuple[str, str, str], int] = {}
    held: dict[tuple[str, str], int] = {}
    if not spent_names:
        return spent, held
    params: dict[str, Any] = {"tenant": tenant_id, "now": now_ms}
    for n, ((_, period), names) in enumerate(spent_names.items()):
        start, end = period_bounds(period, now_ms)
        params[f"s{n}_names"] = sorted(names)
        params[f"s{n}_start"], params[f"s{n}_end"] = start // DAY_MS, end // DAY_MS
    for n, names in enumerate(held_names.values()):
        params[f"h{n}_names"] = sorted(names)
    statement = _figures_statement(tuple(spent_names), tuple(held_names))
    for kind, scope_value, period_value, name, amount in connection.execute(statement, params):
        if kind == "spent":
            spent[(scope_value, period_value, name)] = int(amount or 0)
        else:
            held[(scope_value, name)] = int(amount or 0)
    return spent, held


_OWNED_SCOPES: Final = (*_NAMED_BY_ROLLUP, BudgetScope.SESSION)
_BUDGET_COLUMNS: Final = (
    BUDGETS.c.id,
    BUDGETS.c.scope,
    BUDGETS.c.name,
    BUDGETS.c.period,
    BUDGETS.c.cap_picos,
    BUDGETS.c.action_at_cap,
    BUDGETS.c.downgrade_model,
)
"""The columns of a budget row, in the order :func:`budget_state` reads them."""


@lru_cache(maxsize=16)
def _budgets_statement(paged: bool, limited: bool) -> Any:
    """The tenant's budgets by id, after ``after_id`` when ``paged``, ``limit`` of them when
    ``limited``."""
    statement = select(*_BUDGET_COLUMNS).where(BUDGETS.c.tenant_id == bindparam("tenant"))
    if paged:
        statement = statement.where(BUDGETS.c.id > bindparam("after_id"))
    statement = statement.order_by(BUDGETS.c.id)
    return statement.limit(bindparam("limit")) if limited else statement


def budget_state(
    row: Mapping[Any, Any], spent_picos: int, held_picos: int, now_ms: int
) -> BudgetState:
    """A budget row (:data:`_BUDGET_COLUMNS`, by name) with its figures at ``now_ms``."""
    scope = BudgetScope(row["scope"])
    period = BudgetPeriod(row["period"])
    start, end = period_bounds(period, now_ms)
    cap = int(row["cap_picos"])
    projected = (
        spent_picos
        if scope is BudgetScope.SESSION
        else projected_picos(spent_picos, start, end, now_ms)
    )
    consumed = _consumed_pct(spent_picos, cap)
    return BudgetState(
        budget_id=int(row["id"]),
        scope=scope,
        name=row["name"],
        period=period,
        cap_picos=cap,
        spent_picos=spent_picos,
        held_picos=held_picos,
        projected_picos=projected,
        period_start_ms=start,
        period_end_ms=end,
        action_at_cap=CapAction(row["action_at_cap"]),
        downgrade_model=row["downgrade_model"],
        status=_status(spent_picos, cap, projected, consumed),
        consumed_pct=consumed,
        now_ms=now_ms,
    )


# --- the budgets covering one call ---------------------------------------------------------


def _written(value: str) -> Any:
    """A constant written into the statement rather than bound: the fewer values a statement
    binds, the less the driver does each time it runs it."""
    return literal_column(f"'{value}'", String())


_ZERO: Final = literal_column("0", BigInteger())


def _sum_where(condition: Any | None, amount: Any) -> Any:
    """The sum of ``amount`` over the rows where ``condition`` holds (all rows: ``None``)."""
    return func.coalesce(
        func.sum(amount if condition is None else case((condition, amount))), _ZERO
    )


def _owner(scope: BudgetScope) -> Any:
    return bindparam(f"owner_{scope.value}")


@lru_cache(maxsize=16)
def _covering_statements(owner_scopes: tuple[BudgetScope, ...]) -> dict[str, Any]:
    tenant: Any = bindparam("tenant")
    scopes = (BudgetScope.ORGANIZATION, *owner_scopes)
    in_rollups = [scope for scope in scopes if scope is not BudgetScope.SESSION]

    def owned(table: Any, scope: BudgetScope) -> Any:
        return None if scope is BudgetScope.ORGANIZATION else table.c[scope.value] == _owner(scope)

    covering = [BUDGETS.c.scope == _written(BudgetScope.ORGANIZATION.value)]
    for scope in owner_scopes:
        named = and_(BUDGETS.c.scope == _written(scope.value), BUDGETS.c.name == _owner(scope))
        covering.append(named)
    statements = {
        "budget": select(*_BUDGET_COLUMNS).where(BUDGETS.c.tenant_id == tenant, or_(*covering)),
        "held": select(
            *(_sum_where(owned(HOLDS, s), HOLDS.c.amount_picos).label(s.value) for s in scopes)
        ).where(HOLDS.c.tenant_id == tenant, HOLDS.c.expires_ms > bindparam("now")),
        "spent": select(
            ROLLUPS.c.day,
            *(
                _sum_where(owned(ROLLUPS, s), ROLLUPS.c.cost_picos).label(s.value)
                for s in in_rollups
            ),
        )
        .where(
            ROLLUPS.c.tenant_id == tenant,
            ROLLUPS.c.day >= bindparam("first_day"),
            ROLLUPS.c.day < bindparam("end_day"),
        )
        .group_by(ROLLUPS.c.day),
    }
    if BudgetScope.SESSION in owner_scopes:
        statements["session"] = select(SESSIONS.c.cost_picos, SESSIONS.c.last_event_ms).where(
            SESSIONS.c.tenant_id == tenant, SESSIONS.c.name == _owner(BudgetScope.SESSION)
        )
    return statements


@lru_cache(maxsize=4)
def _period_days(day: int) -> dict[BudgetPeriod, tuple[int, int]]:
    """The UTC periods containing day ``day`` (days since 1970), as day numbers."""
    return {
        period: (start // DAY_MS, end // DAY_MS)
        for period in BudgetPeriod
        for start, end in [period_bounds(period, day * DAY_MS)]
    }


@dataclass(frozen=True, slots=True)
class CoveringBudgets:
    """How to read the budgets that cover a call, with their figures: run each of
    :attr:`statements` (by kind) with :attr:`params` in one transaction (in any order, or
    together), then :meth:`figures` of their rows.

    The figures are those :func:`budget_states` gives every budget, read so that each table
    is read once whatever the number of covering budgets: held summed per owner scope over
    the live holds, spent summed per owner scope and UTC day over the rollups of the widest
    period (and added up per period here), a session budget's from its session's cost."""

    statements: Mapping[str, Any]
    params: dict[str, Any]
    periods: Mapping[BudgetPeriod, tuple[int, int]]

    def figures(
        self, found: Mapping[str, Sequence[Mapping[Any, Any]]]
    ) -> list[tuple[Mapping[Any, Any], int, int]]:
        """Each covering budget (its row, as :func:`budget_state` reads it) with its spent
        and held picodollars, by id; ``found``: the rows of each statement by kind."""
        (held,) = found["held"]
        session = found.get("session")
        session_spent = {  # counted in the periods the session has events in
            period.value: int(session[0]["cost_picos"])
            for period, (start, _) in self.periods.items()
            if session and session[0]["last_event_ms"] >= start * DAY_MS
        }
        spent: dict[tuple[str, str], int] = {}
        for period, (start, end) in self.periods.items():
            for row in found["spent"]:
                if start <= row["day"] < end:
                    for scope, amount in row.items():
                        if scope != "day":
                            key = (scope, period.value)
                            spent[key] = spent.get(key, 0) + int(amount)
        budgets = sorted(found["budget"], key=lambda row: int(row["id"]))
        return [
            (
                row,
                session_spent.get(row["period"], 0)
                if row["scope"] == BudgetScope.SESSION.value
                else spent.get((row["scope"], row["period"]), 0),
                int(held[row["scope"]]),
            )
            for row in budgets
        ]


def covering_budgets(tenant_id: int, owners: Mapping[str, str], now_ms: int) -> CoveringBudgets:
    """The statements and parameters that read the budgets covering a call for ``owners``
    (the organisation's, and those of the department, project, employee and session named)
    at ``now_ms``."""
    owner_scopes = tuple(scope for scope in _OWNED_SCOPES if owners.get(scope.value))
    periods = _period_days(now_ms // DAY_MS)
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "now": now_ms,
        "first_day": min(start for start, _ in periods.values()),
        "end_day": max(end for _, end in periods.values()),
    }
    params.update({f"owner_{scope.value}": owners[scope.value] for scope in owner_scopes})
    return CoveringBudgets(_covering_statements(owner_scopes), params, periods)


def budget_states(
    connection: Connection,
    tenant_id: int,
    now_ms: int,
    *,
    owners: Mapping[str, str] | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[BudgetState]:
    """The tenant's budgets (by id; only those covering ``owners`` when given, ``limit`` of
    them after ``after_id`` when given) with their figures at ``now_ms``."""
    if owners is not None:
        covering = covering_budgets(tenant_id, owners, now_ms)
        found = {
            kind: [row._mapping for row in connection.execute(statement, covering.params)]
            for kind, statement in covering.statements.items()
        }
        states = [
            budget_state(row, spent, held, now_ms)
            for row, spent, held in covering.figures(found)
            if after_id is None or row["id"] > after_id
        ]
        return states if limit is None else states[:limit]
    params = {"tenant": tenant_id, "after_id": after_id, "limit": limit}
    statement = _budgets_statement(after_id is not None, limit is not None)
    budgets = connection.execute(statement, params).all()
    spent, held = _figures(connection, tenant_id, budgets, now_ms)
    return [
        budget_state(
            budget._mapping,
            spent.get((budget.scope, budget.period, budget.name), 0),
            held.get((budget.scope, budget.name), 0),
            now_ms,
        )
        for budget in budgets
    ]
