"""A provider's figures stated under a model alias reconcile under the one dated snapshot of
that alias the same provider and day name; otherwise the alias keeps a row of its own."""

from __future__ import annotations

from p402.ledger.reconciliation import ReconciliationFigures, _aliases_joined

DAY = 20_400


def _cost(picos: int) -> ReconciliationFigures:
    return ReconciliationFigures(provider_cost_picos=picos, provider_unmapped_picos=0)


def test_an_alias_joins_its_one_snapshot_of_the_same_day():
    reported = {
        ("anthropic", DAY, "claude-sonnet-4-5"): _cost(7),
        ("anthropic", DAY, "claude-sonnet-4-5-20250929"): _cost(5),
    }
    joined = _aliases_joined(reported, set(reported))
    assert set(joined) == {("anthropic", DAY, "claude-sonnet-4-5-20250929")}
    assert joined[("anthropic", DAY, "claude-sonnet-4-5-20250929")].provider_cost_picos == 12


def test_a_snapshot_named_only_by_the_metered_side_is_found():
    reported = {("anthropic", DAY, "claude-haiku-4-5"): _cost(3)}
    keys = set(reported) | {("anthropic", DAY, "claude-haiku-4-5-20251001")}
    joined = _aliases_joined(reported, keys)
    assert set(joined) == {("anthropic", DAY, "claude-haiku-4-5-20251001")}


def test_with_no_snapshot_or_several_the_alias_stays_its_own_row():
    reported = {
        ("anthropic", DAY, "claude-opus-4"): _cost(1),
        ("anthropic", DAY + 1, "claude-sonnet-4-5"): _cost(2),
        ("openai", DAY, "claude-sonnet-4-5"): _cost(4),  # another provider's snapshot
    }
    keys = set(reported) | {
        ("anthropic", DAY, "claude-opus-4-20250514"),
        ("anthropic", DAY, "claude-opus-4-20250806"),  # two: which one is not said
        ("anthropic", DAY, "claude-sonnet-4-5-20250929"),  # another day
        ("anthropic", DAY + 2, "claude-sonnet-4-5-20250929"),
    }
    assert set(_aliases_joined(reported, keys)) == set(reported)
