"""The pre-call policy rules: one evaluation, used by the instrumentation on its cached
snapshot and by the server's ``POST /v1/authorize`` on the ledger's figures.

A call is checked in two steps.

1. **Department tier policy.** A model whose tier is above the department's ``max_model``
   tier is downgraded to ``max_model``; one below the ``min_model`` tier is blocked. A model
   whose tier neither the tenant's overrides nor the built-in table knows passes (give it a
   tier override to bind it).
2. **Budgets.** Every budget that applies to the call's owners (the organisation's, and
   those of its department, project, employee and session) is checked with the call's cost
   bound: ``used + bound > cap`` puts the budget at its cap (``used`` is what the period has
   spent plus what is reserved). Then the budgets' actions apply, the strongest first:
   ``block`` blocks; ``downgrade`` switches to the ``downgrade_model`` of the most specific
   such budget, for as long as the budget is at its cap (a model below the department's
   floor, or one whose own bound puts a ``block`` budget at its cap: blocked); ``notify``
   lets the call through, ``flagged``.

A call whose cost cannot be bounded (a model the price data does not know) is checked with a
bound of 0, and is stopped only by a budget already at its cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, NamedTuple

from p402.instrumentation.money import PICOS_PER_USD
from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.tiers import ModelTier
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import (
    BudgetPeriod,
    BudgetScope,
    CapAction,
    PolicyDecision,
    PolicyResult,
    RoutingPreference,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "SCOPE_SPECIFICITY",
    "BudgetView",
    "TierOf",
    "TierPolicy",
    "TierStep",
    "Verdict",
    "applies_to",
    "bound_rates",
    "cost_bound_picos",
    "evaluate",
    "tier_step",
    "within_caps",
]

DEFAULT_OUTPUT_TOKENS: Final = 4096
"""The output bound of a call that sets no output limit (``max_tokens`` and the like)."""

SCOPE_SPECIFICITY: Final = (
    BudgetScope.SESSION,
    BudgetScope.EMPLOYEE,
    BudgetScope.PROJECT,
    BudgetScope.DEPARTMENT,
    BudgetScope.ORGANIZATION,
)
"""Budget scopes, most specific first: the first downgrade budget at its cap names the model."""

_ACTION_STRENGTH: Final = {CapAction.BLOCK: 2, CapAction.DOWNGRADE: 1, CapAction.NOTIFY: 0}


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """A department's tier bounds (model names whose tiers are the bounds)."""

    department: str
    min_model: str | None = None
    max_model: str | None = None
    routing: RoutingPreference = RoutingPreference.QUALITY_FIRST


class BudgetView(NamedTuple):
    """A budget as a decision sees it: its cap and what is already used of it (spent in the
    period plus reserved)."""

    scope: BudgetScope
    name: str
    period: BudgetPeriod
    cap_picos: int
    used_picos: int
    action: CapAction
    downgrade_model: str | None = None

    @property
    def label(self) -> str:
        """``project=phoenix month``, ``organization month``."""
        owner = f"{self.scope.value}={self.name}" if self.name else self.scope.value
        return f"{owner} {self.period.value}"

    def over_cap_with(self, cost_picos: int | None) -> bool:
        if cost_picos is None:
            return self.used_picos >= self.cap_picos
        return self.used_picos + cost_picos > self.cap_picos


class Verdict(NamedTuple):
    """The outcome: what to do, which model to send, why, and the cost bound of that model."""

    decision: PolicyDecision
    result: PolicyResult
    model: str
    reason: str | None
    cost_picos: int | None

    @property
    def allowed(self) -> bool:
        return self.decision is not PolicyDecision.BLOCK


def applies_to(scope: BudgetScope, name: str, owners: Mapping[str, str]) -> bool:
    """Whether a budget of ``scope`` named ``name`` covers a call made for ``owners``."""
    if scope is BudgetScope.ORGANIZATION:
        return True
    return owners.get(scope.value) == name


def cost_bound_picos(
    provider: str, model: str, input_tokens: int, output_tokens: int, at: datetime | None = None
) -> int | None:
    """The most a call can cost, in picodollars: ``input_tokens`` and ``output_tokens`` priced
    at the model's highest per-token rates (uncached input, every tier; rounded up to whole
    picodollars per token) at ``at`` (default: now); ``None`` when the price data does not
    know the model."""
    rates = bound_rates(provider, model, int(at.timestamp() if at else time.time()) // 86_400)
    if rates is None:
        return None
    fixed, per_input, per_output = rates
    return fixed + per_input * input_tokens + per_output * output_tokens


_RATE_PROBES: Final = (1_000, 1_000_000)
_bound_rates: dict[tuple[str, str, int], tuple[int, int, int] | None] = {}


def bound_rates(provider: str, model: str, day: int) -> tuple[int, int, int] | None:
    """What :func:`cost_bound_picos` prices with on UTC day ``day`` (days since 1970): the fixed
    cost and the highest input and output rates, in whole picodollars; ``None`` when the price
    data does not know the model."""
    key = (provider, model, day)
    return _bound_rates[key] if key in _bound_rates else _derive_bound_rates(key)


def _derive_bound_rates(key: tuple[str, str, int]) -> tuple[int, int, int] | None:
    """Fixed cost and the highest input and output rates, in whole picodollars (rounded up),
    derived from the one pricing function once per model and UTC day (a tiered price is not
    linear: probing at small and large counts finds the highest rate of each kind)."""
    provider, model, day = key
    at = datetime.fromtimestamp(day * 86_400 + 43_200, tz=UTC)

    def cost(input_tokens: int, output_tokens: int) -> Decimal | None:
        usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)
        return compute_cost(usage, model=model, provider=provider, at=at)

    fixed = cost(0, 0)
    rates: tuple[int, int, int] | None = None
    if fixed is not None:
        per_input = per_output = Decimal(0)
        for n in _RATE_PROBES:
            with_input = cost(n, 0) or fixed
            per_input = max(per_input, (with_input - fixed) / n)
            per_output = max(per_output, ((cost(n, n) or with_input) - with_input) / n)
        rates = tuple(  # type: ignore[assignment]
            math.ceil(amount * PICOS_PER_USD) for amount in (fixed, per_input, per_output)
        )
    _bound_rates[key] = rates
    return rates


def _at_cap(budgets: Sequence[BudgetView], cost: int | None) -> list[BudgetView]:
    if cost is None:
        return [b for b in budgets if b.used_picos >= b.cap_picos]
    return [b for b in budgets if b.used_picos + cost > b.cap_picos]


TierOf = Callable[[str], ModelTier | None]
"""The tier of a model name (the tenant's overrides first, then the built-in table)."""


def _below_floor(model: str, policy: TierPolicy | None, tier: TierOf) -> str | None:
    """The reason ``model`` is below the department's minimum tier, or ``None``."""
    if policy is None or policy.min_model is None:
        return None
    found, floor = tier(model), tier(policy.min_model)
    if found is not None and floor is not None and found.rank < floor.rank:
        return f"dept_policy={policy.routing.value}, min_tier={floor.value}"
    return None


class TierStep(NamedTuple):
    """The first step of a decision, the department's tier policy: the call blocked (below the
    floor), or the model it goes on with (``max_model`` above the ceiling), with the result and
    reasons so far. It depends on the model and the policy only."""

    blocked: Verdict | None
    chosen: str
    result: PolicyResult
    reasons: tuple[str, ...]


def tier_step(model: str, policy: TierPolicy | None, tier: TierOf) -> TierStep:
    """Step 1 of the module docstring for a call to ``model``."""
    if reason := _below_floor(model, policy, tier):
        blocked = Verdict(PolicyDecision.BLOCK, PolicyResult.BLOCKED, model, reason, None)
        return TierStep(blocked, model, PolicyResult.BLOCKED, (reason,))
    if policy is not None and policy.max_model:
        found, ceiling = tier(model), tier(policy.max_model)
        if found is not None and ceiling is not None and found.rank > ceiling.rank:
            reason = f"dept_policy={policy.routing.value}, max_tier={ceiling.value}"
            return TierStep(None, policy.max_model, PolicyResult.DOWNGRADED, (reason,))
    return TierStep(None, model, PolicyResult.ALLOWED, ())


def within_caps(model: str, step: TierStep, cost: int | None) -> Verdict:
    """The verdict when no budget is at its cap with the call's bound ``cost`` (the common
    case of step 2)."""
    decision = PolicyDecision.ALLOW if step.chosen == model else PolicyDecision.DOWNGRADE
    reason = "; ".join(step.reasons) if step.reasons else None
    return Verdict(decision, step.result, step.chosen, reason, cost)


def evaluate(
    model: str,
    *,
    policy: TierPolicy | None,
    tier: TierOf,
    budgets: Sequence[BudgetView],
    cost_of: Callable[[str], int | None],
    step: TierStep | None = None,
) -> Verdict:
    """Decide a call to ``model``; see the module docstring. ``tier(model)`` is a model's
    tier; ``cost_of(model)`` the call's cost bound with that model (picodollars, ``None`` when
    it cannot be priced); ``step``, when the caller has it, is ``tier_step(model, policy,
    tier)``."""
    step = step or tier_step(model, policy, tier)
    if step.blocked is not None:
        return step.blocked
    chosen, reasons, result = step.chosen, list(step.reasons), step.result
    cost = cost_of(chosen) if budgets else None
    at_cap = _at_cap(budgets, cost)
    if not at_cap:  # the common case, kept short: it runs before every call
        return within_caps(model, step, cost)
    strongest = max((_ACTION_STRENGTH[b.action] for b in at_cap), default=None)
    if strongest == _ACTION_STRENGTH[CapAction.BLOCK]:
        blocking = next(b for b in at_cap if b.action is CapAction.BLOCK)
        reason = f"budget {blocking.label} at cap (action_at_cap=block)"
        return Verdict(PolicyDecision.BLOCK, PolicyResult.BLOCKED, model, reason, None)
    if strongest == _ACTION_STRENGTH[CapAction.DOWNGRADE]:
        downgrading = min(
            (b for b in at_cap if b.action is CapAction.DOWNGRADE),
            key=lambda b: SCOPE_SPECIFICITY.index(b.scope),
        )
        target = downgrading.downgrade_model
        label = f"budget {downgrading.label} at cap (action_at_cap=downgrade)"
        if not target or target == chosen:
            reason = f"{label}, no cheaper downgrade_model"
            return Verdict(PolicyDecision.BLOCK, PolicyResult.BLOCKED, model, reason, None)
        if floor := _below_floor(target, policy, tier):
            reason = f"{label}, downgrade_model {target} below {floor}"
            return Verdict(PolicyDecision.BLOCK, PolicyResult.BLOCKED, model, reason, None)
        chosen, cost, result = target, cost_of(target), PolicyResult.DOWNGRADED
        # The downgrade answers the downgrade budgets at their caps; a block budget still
        # refuses a downgrade model whose own bound does not fit it.
        still = [b for b in budgets if b.over_cap_with(cost) and b.action is CapAction.BLOCK]
        if still:
            reason = f"{label}; budget {still[0].label} at cap even with {target}"
            return Verdict(PolicyDecision.BLOCK, PolicyResult.BLOCKED, model, reason, None)
        reasons.append(f"{label}, downgrade_model={target}")
        at_cap = _at_cap(budgets, cost)
    for budget in at_cap:
        if budget.action is CapAction.NOTIFY:
            reasons.append(f"budget {budget.label} at cap (action_at_cap=notify)")
            if result is PolicyResult.ALLOWED:
                result = PolicyResult.FLAGGED
    decision = PolicyDecision.ALLOW if chosen == model else PolicyDecision.DOWNGRADE
    return Verdict(decision, result, chosen, "; ".join(reasons) or None, cost)
