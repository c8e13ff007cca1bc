"""Strict enforcement: reserving a call's maximum cost before it is sent
(``POST /v1/authorize``), and letting the reservation go once the call's event is in.

:func:`authorize` runs in one transaction that is serialised per tenant (PostgreSQL: a
transaction-scoped advisory lock on the tenant; SQLite: ``BEGIN IMMEDIATE``, which holds the
database's write lock), so concurrent calls cannot both take the last of a budget. In it:
expired holds are dropped; the department tier policy and every budget covering the call's
owners are checked with :func:`p402.instrumentation.policy_rules.evaluate`, each budget as
``spent + held + the call's bound ≤ cap``; an allowed or downgraded call leaves a hold of its
bound, keyed by its event id.

Holds are committed without waiting for the disk (SQLite ``synchronous=NORMAL``, PostgreSQL
``synchronous_commit = off``, for this transaction only): a hold is a reservation of minutes,
not a record, and a power cut can at worst forget the holds of the last moments (an
application crash loses none). Events, and the ingest that releases holds, stay fully durable.

A hold counts against its owners' budgets until the event with that ``p402.event.id`` is
ingested (:func:`release_batch`, called by the ingest transaction that writes the event, so the
event's cost replaces its hold atomically) or until it expires, :data:`HOLD_TTL_MS` after it
was made (a call that never reports back, e.g. its process died, does not hold a budget for
ever; the next authorisation deletes expired holds). Asking again for an event id that holds
already answers the same hold.

A call's bound: the server prices ``max_input_tokens`` and ``max_output_tokens`` (when the
caller sends them) with the tenant's prices (negotiated rates included) and takes the larger
of that and the caller's ``max_cost_usd`` for the model asked for; for a model the server
switches to, its own pricing of the same token bounds (or, without them, the caller's figure).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, text

from p402.instrumentation.policy_rules import BudgetView, evaluate
from p402.instrumentation.tiers import tier_of
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import PolicyDecision, PolicyResult
from p402.ledger.budgets import HOLDS, budget_states
from p402.ledger.costing import ledger_cost
from p402.ledger.policies import department_policy, tier_overrides
from p402.ledger.price_overrides import RateOverride, price_overrides

__all__ = ["HOLD_TTL_MS", "Authorization", "CallToAuthorize", "authorize", "release_batch"]

HOLD_TTL_MS: Final = 10 * 60 * 1000
"""How long a hold counts when its event does not arrive: 10 minutes."""

_LOCK_CLASS: Final = 0x42554447  # PostgreSQL advisory lock class of budget holds: "BUDG"
_HELD_OWNERS: Final = ("department", "project", "employee", "session")
_RELEASE: Final = text(
    "DELETE FROM budget_hold WHERE tenant_id = :tenant AND event_id IN "
    "(SELECT event_id FROM economic_event WHERE batch = :batch)"
)
_LOCK: Final = text(
    "SELECT pg_advisory_xact_lock(:lock_class, :tenant), "
    "set_config('synchronous_commit', 'off', true)"
)
_DELETE_EXPIRED: Final = delete(HOLDS).where(
    HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.expires_ms <= bindparam("now")
)
_HOLD_OF_EVENT: Final = select(HOLDS.c.model, HOLDS.c.amount_picos, HOLDS.c.expires_ms).where(
    HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.event_id == bindparam("event_id")
)
_INSERT_HOLD: Final = insert(HOLDS)


@dataclass(frozen=True, slots=True)
class CallToAuthorize:
    """A call about to be sent, as ``POST /v1/authorize`` describes it."""

    event_id: str
    model: str
    provider: str | None = None
    owners: Mapping[str, str] = field(default_factory=dict)
    max_cost_picos: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """The answer: the decision, the model to send, why, and the hold made (if any)."""

    event_id: str
    decision: PolicyDecision
    result: PolicyResult
    model: str
    reason: str | None
    hold_picos: int | None
    expires_ms: int | None


@contextmanager
def _tenant_transaction(engine: Engine, tenant_id: int) -> Iterator[Connection]:
    """A transaction no other authorisation of the tenant runs beside, committed without
    waiting for the disk (see the module docstring)."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        try:
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.execute(_LOCK, {"lock_class": _LOCK_CLASS, "tenant": tenant_id})
            yield connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:  # the pooled connection goes back with the ledger's own setting
                connection.exec_driver_sql("PRAGMA synchronous=FULL")
                connection.commit()


def release_batch(connection: Connection, tenant_id: int, batch: str) -> None:
    """Drop the holds of the events one ingest transaction wrote (in that transaction)."""
    connection.execute(_RELEASE, {"tenant": tenant_id, "batch": batch})


def _bound_of(
    call: CallToAuthorize, model: str, now_ms: int, prices: Sequence[RateOverride]
) -> int | None:
    if call.max_input_tokens is None and call.max_output_tokens is None:
        return call.max_cost_picos
    usage = TokenUsage(
        input_tokens=call.max_input_tokens or 0, output_tokens=call.max_output_tokens or 0
    )
    priced, _ = ledger_cost(
        usage, model=model, provider=call.provider, ts_ms=now_ms, overrides=prices
    )
    if model == call.model and call.max_cost_picos is not None:
        return max(priced or 0, call.max_cost_picos)
    return priced


def authorize(engine: Engine, tenant_id: int, call: CallToAuthorize, now_ms: int) -> Authorization:
    """Decide ``call`` and, unless it is blocked, hold its bound; see the module docstring."""
    prices = price_overrides(engine, tenant_id)
    with _tenant_transaction(engine, tenant_id) as connection:
        connection.execute(_DELETE_EXPIRED, {"tenant": tenant_id, "now": now_ms})
        held = (
            connection.execute(_HOLD_OF_EVENT, {"tenant": tenant_id, "event_id": call.event_id})
            .mappings()
            .first()
        )
        if held is not None:
            same = held["model"] == call.model
            return Authorization(
                call.event_id,
                PolicyDecision.ALLOW if same else PolicyDecision.DOWNGRADE,
                PolicyResult.ALLOWED if same else PolicyResult.DOWNGRADED,
                held["model"],
                "already authorised",
                int(held["amount_picos"]),
                int(held["expires_ms"]),
            )
        budgets = [
            BudgetView(
                scope=state.scope,
                name=state.name,
                period=state.period,
                cap_picos=state.cap_picos,
                used_picos=state.spent_picos + state.held_picos,
                action=state.action_at_cap,
                downgrade_model=state.downgrade_model,
            )
            for state in budget_states(connection, tenant_id, now_ms, owners=call.owners)
        ]
        overrides = tier_overrides(connection, tenant_id)
        verdict = evaluate(
            call.model,
            policy=department_policy(connection, tenant_id, call.owners.get("department")),
            tier=lambda model: tier_of(model, overrides),
            budgets=budgets,
            cost_of=lambda model: _bound_of(call, model, now_ms, prices),
        )
        if not verdict.allowed:
            return Authorization(
                call.event_id, verdict.decision, verdict.result, verdict.model, verdict.reason,
                None, None,
            )  # fmt: skip
        hold = verdict.cost_picos or 0
        expires = now_ms + HOLD_TTL_MS
        connection.execute(
            _INSERT_HOLD,
            {
                "tenant_id": tenant_id,
                "event_id": call.event_id,
                "model": verdict.model,
                "amount_picos": hold,
                "created_ms": now_ms,
                "expires_ms": expires,
                **{owner: call.owners.get(owner) or None for owner in _HELD_OWNERS},
            },
        )
        return Authorization(
            call.event_id,
            verdict.decision,
            verdict.result,
            verdict.model,
            verdict.reason,
            hold,
            expires,
        )
