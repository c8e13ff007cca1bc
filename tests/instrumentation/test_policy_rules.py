"""The pre-call policy rules (shared by the instrumentation and ``POST /v1/authorize``), the
cost bound, model tiers, and how the instrumentation reads a request without parsing it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from p402.instrumentation.enforcement import _scan, refusal_body
from p402.instrumentation.money import to_picos
from p402.instrumentation.policy_rules import (
    DEFAULT_OUTPUT_TOKENS,
    BudgetView,
    TierPolicy,
    cost_bound_picos,
    evaluate,
)
from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.tiers import ModelTier, tier_of
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import (
    ApiFormat,
    BudgetPeriod,
    BudgetScope,
    CapAction,
    PolicyDecision,
    PolicyResult,
    RoutingPreference,
)

AT = datetime(2026, 11, 20, tzinfo=UTC)
PRICES = {"big": 100, "mid": 10, "small": 1}  # picodollars per call, by model


def _cost(model: str) -> int | None:
    return PRICES.get(model)


def _tier(model: str) -> ModelTier | None:
    return {"big": ModelTier.PREMIUM, "mid": ModelTier.STANDARD, "small": ModelTier.ECONOMY}.get(
        model
    )


def _budget(
    scope: BudgetScope,
    used: int,
    cap: int,
    action: CapAction,
    downgrade_model: str | None = None,
    name: str = "x",
) -> BudgetView:
    name = "" if scope is BudgetScope.ORGANIZATION else name
    return BudgetView(scope, name, BudgetPeriod.MONTH, cap, used, action, downgrade_model)


def _decide(model: str, policy: TierPolicy | None = None, *budgets: BudgetView):
    return evaluate(model, policy=policy, tier=_tier, budgets=budgets, cost_of=_cost)


LEGAL = TierPolicy("legal", min_model="mid", max_model="mid", routing=RoutingPreference.COST_FIRST)


def test_a_call_no_policy_or_budget_covers_is_allowed():
    verdict = _decide("big")
    assert verdict == (PolicyDecision.ALLOW, PolicyResult.ALLOWED, "big", None, None)


def test_the_department_ceiling_downgrades_and_the_floor_blocks():
    above = _decide("big", LEGAL)
    assert (above.decision, above.result, above.model) == (
        PolicyDecision.DOWNGRADE,
        PolicyResult.DOWNGRADED,
        "mid",
    )
    assert above.reason == "dept_policy=cost-first, max_tier=standard"
    below = _decide("small", LEGAL)
    assert (below.decision, below.result, below.model) == (
        PolicyDecision.BLOCK,
        PolicyResult.BLOCKED,
        "small",
    )
    assert below.reason == "dept_policy=cost-first, min_tier=standard"
    assert _decide("mid", LEGAL).decision is PolicyDecision.ALLOW
    assert _decide("unknown-model", LEGAL).decision is PolicyDecision.ALLOW  # no tier: passes


def test_a_budget_fits_the_bound_up_to_its_cap_exactly():
    fits = _decide("big", None, _budget(BudgetScope.PROJECT, 900, 1000, CapAction.BLOCK))
    assert (fits.decision, fits.cost_picos) == (PolicyDecision.ALLOW, 100)
    over = _decide("big", None, _budget(BudgetScope.PROJECT, 901, 1000, CapAction.BLOCK))
    assert over.decision is PolicyDecision.BLOCK
    assert over.reason == "budget project=x month at cap (action_at_cap=block)"


def test_block_is_the_strongest_action_then_downgrade_then_notify():
    notify = _budget(BudgetScope.ORGANIZATION, 1000, 1000, CapAction.NOTIFY)
    downgrade = _budget(BudgetScope.DEPARTMENT, 1000, 1000, CapAction.DOWNGRADE, "small")
    block = _budget(BudgetScope.EMPLOYEE, 1000, 1000, CapAction.BLOCK)
    assert _decide("big", None, notify, downgrade, block).decision is PolicyDecision.BLOCK
    # Both at their caps: the call goes on with the downgrade model, and is flagged too.
    downgraded = _decide("big", None, notify, downgrade)
    assert (downgraded.decision, downgraded.model) == (PolicyDecision.DOWNGRADE, "small")
    assert "action_at_cap=notify" in (downgraded.reason or "")
    flagged = _decide("big", None, notify)
    assert (flagged.decision, flagged.result) == (PolicyDecision.ALLOW, PolicyResult.FLAGGED)
    assert flagged.reason == "budget organization month at cap (action_at_cap=notify)"


def test_a_downgrade_budget_sends_its_model_when_that_fits():
    department = _budget(BudgetScope.DEPARTMENT, 950, 1000, CapAction.DOWNGRADE, "small")
    project = _budget(BudgetScope.PROJECT, 950, 1000, CapAction.DOWNGRADE, "mid")
    notify = _budget(BudgetScope.ORGANIZATION, 995, 1000, CapAction.NOTIFY)
    verdict = _decide("big", None, department, project, notify)
    # The most specific budget at its cap (the project's) names the model; mid costs 10.
    assert (verdict.decision, verdict.result, verdict.model, verdict.cost_picos) == (
        PolicyDecision.DOWNGRADE,
        PolicyResult.DOWNGRADED,
        "mid",
        10,
    )
    assert verdict.reason == (
        "budget project=x month at cap (action_at_cap=downgrade), downgrade_model=mid; "
        "budget organization month at cap (action_at_cap=notify)"
    )


def test_a_downgrade_budget_keeps_downgrading_past_its_cap():
    # Spent to its cap and beyond: calls go on with the downgrade model, they are not refused.
    for used in (1000, 1500):
        over = _budget(BudgetScope.PROJECT, used, 1000, CapAction.DOWNGRADE, "mid")
        verdict = _decide("big", None, over)
        assert (verdict.decision, verdict.result, verdict.model, verdict.cost_picos) == (
            PolicyDecision.DOWNGRADE,
            PolicyResult.DOWNGRADED,
            "mid",
            10,
        )


def test_a_downgrade_that_cannot_help_blocks():
    no_cheaper = _budget(BudgetScope.PROJECT, 1000, 1000, CapAction.DOWNGRADE, "big")
    assert "no cheaper downgrade_model" in (_decide("big", None, no_cheaper).reason or "")
    # A downgrade model dearer than the one asked for, whose bound a block budget cannot take
    dearer = _budget(BudgetScope.PROJECT, 1000, 1000, CapAction.DOWNGRADE, "big")
    block = _budget(BudgetScope.ORGANIZATION, 950, 1000, CapAction.BLOCK)  # takes mid, not big
    verdict = _decide("mid", None, dearer, block)
    assert verdict.decision is PolicyDecision.BLOCK
    assert "budget organization month at cap even with big" in (verdict.reason or "")
    below_floor = _budget(BudgetScope.DEPARTMENT, 1000, 1000, CapAction.DOWNGRADE, "small")
    verdict = _decide("mid", LEGAL, below_floor)
    assert verdict.decision is PolicyDecision.BLOCK
    assert "downgrade_model small below dept_policy=cost-first, min_tier=standard" in (
        verdict.reason or ""
    )


def test_a_call_that_cannot_be_priced_is_stopped_only_by_a_budget_at_its_cap():
    below = _budget(BudgetScope.PROJECT, 999, 1000, CapAction.BLOCK)
    at = _budget(BudgetScope.PROJECT, 1000, 1000, CapAction.BLOCK)
    assert _decide("unpriced", None, below).decision is PolicyDecision.ALLOW
    assert _decide("unpriced", None, at).decision is PolicyDecision.BLOCK


@pytest.mark.parametrize(
    ("provider", "model", "usage", "tight"),
    [
        ("openai", "gpt-5-mini", TokenUsage(input_tokens=1342, output_tokens=214), True),
        ("gcp.gemini", "gemini-2.5-flash", TokenUsage(input_tokens=1540, output_tokens=610), True),
        # tiered: every count is priced at the long-context rates, above the 200k threshold
        ("anthropic", "claude-sonnet-4-5", TokenUsage(input_tokens=10_252, output_tokens=5), False),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(input_tokens=250_000, output_tokens=9), True),
    ],
)  # fmt: skip
def test_the_cost_bound_is_never_below_the_price_of_the_same_tokens(provider, model, usage, tight):
    bound = cost_bound_picos(provider, model, usage.input_tokens, usage.output_tokens, AT)
    price = compute_cost(usage, model=model, provider=provider, at=AT)
    assert bound is not None and price is not None
    assert bound >= to_picos(price)
    if tight:  # whole picodollars per token, rounded up
        assert bound <= to_picos(price) + usage.input_tokens + usage.output_tokens + 1


def test_the_cost_bound_of_an_unknown_model_is_none():
    assert cost_bound_picos("openai", "in-house-llm", 100, 100, AT) is None


def test_tiers_come_from_the_tenants_overrides_first_then_the_built_in_table():
    assert tier_of("gpt-5-mini") is ModelTier.ECONOMY
    assert tier_of("claude-sonnet-4-5-20250929") is ModelTier.STANDARD  # date suffix
    assert tier_of("anthropic/claude-sonnet-4.5") is ModelTier.STANDARD  # router, dots
    assert tier_of("models/gemini-2.5-pro") is ModelTier.PREMIUM
    assert tier_of("in-house-llm") is None
    overrides = {"gpt-5-mini": "premium", "in-house-llm": ModelTier.STANDARD}
    assert tier_of("gpt-5-mini-2025-08-07", overrides) is ModelTier.PREMIUM
    assert tier_of("in-house-llm", overrides) is ModelTier.STANDARD


def _body(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_body(messages=[{"role": "user", "content": 'say "model": "x"'}], model="gpt-5"),
         ("gpt-5", 1, DEFAULT_OUTPUT_TOKENS)),
        (_body(model="gpt-5", max_completion_tokens=300), ("gpt-5", 1, 300)),
        (_body(max_tokens=1024, messages=[], model="claude-haiku-4-5"),
         ("claude-haiku-4-5", 1, 1024)),
        (json.dumps({"model": "gpt-5", "max_output_tokens": 50}, indent=2).encode(),
         ("gpt-5", 1, 50)),
        (_body(contents=[{"role": "model", "parts": []}], generationConfig={"maxOutputTokens": 64}),
         (None, 0, 64)),
        (_body(model="gpt-5", metadata={"model": "other"}), (None, 2, DEFAULT_OUTPUT_TOKENS)),
        (_body(model="gpt-5", max_tokens=10, tools=[{"max_tokens": 99}]), ("gpt-5", 1, 99)),
        (_body(model=5, max_tokens="9", max_output_tokens=7), (None, 0, 7)),
        (b"not json", (None, 0, DEFAULT_OUTPUT_TOKENS)),
        (b'{"model":"gpt-5","max_tokens":' + b"9" * 5000 + b"}", ("gpt-5", 1, 10**18)),
        (_body(model="gpt-5", max_tokens=10**18 - 1), ("gpt-5", 1, 10**18 - 1)),
    ],
)  # fmt: skip
def test_a_request_is_read_without_parsing_it(body, expected):
    assert _scan(body) == expected


def test_refusals_have_each_providers_error_shape():
    assert refusal_body(ApiFormat.OPENAI, "r") == {
        "error": {
            "message": "P402 policy blocked this call: r",
            "type": "p402_policy_blocked",
            "code": "policy_blocked",
        }
    }
    assert refusal_body(ApiFormat.ANTHROPIC, "r") == {
        "type": "error",
        "error": {"type": "billing_error", "message": "P402 policy blocked this call: r"},
    }
    assert refusal_body(ApiFormat.GEMINI, "r") == {
        "error": {
            "code": 402,
            "message": "P402 policy blocked this call: r",
            "status": "FAILED_PRECONDITION",
        }
    }
