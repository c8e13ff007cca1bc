"""Reading the providers' Admin API usage and cost reports: shapes, units, exact money."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from p402.instrumentation.money import PICOS_PER_USD
from p402.ledger.clock import from_iso
from p402.ledger.provider_reports import InvalidReport, read_report

FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"


def _load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


def test_openai_usage_pages_are_read_with_cached_tokens_inside_input():
    results = read_report("openai", _load("openai_usage_completions.json"))
    assert len(results) == 3  # two pages, three results
    first = results[0]
    assert first.kind == "usage"
    assert first.bucket_start_ms == from_iso("2026-11-01")
    assert first.bucket_end_ms == from_iso("2026-11-02")
    assert (first.input_tokens, first.cache_read_tokens, first.output_tokens) == (
        1284000,
        812000,
        201500,
    )
    assert first.cache_write_tokens is None  # OpenAI reports no cache writes: not 0
    assert first.requests == 942
    assert (first.model, first.project_id) == ("gpt-5-mini-2025-08-07", "proj_legal8Fq2")
    assert len({result.natural_key for result in results}) == 3


def test_openai_costs_are_exact_and_line_items_name_their_model():
    results = read_report("openai", _load("openai_costs.json"))
    input_cost = results[0]
    assert input_cost.kind == "cost"
    assert input_cost.cost_picos == 130_450_000_000  # 0.13045 USD, no float on the way
    assert input_cost.model == "gpt-5-mini-2025-08-07"
    assert input_cost.line_item == "gpt-5-mini-2025-08-07, input"
    web_search = results[4]
    assert web_search.model is None and web_search.line_item == "web search tool calls"
    total = sum(result.cost_picos or 0 for result in results)
    expected = Decimal("0.13045") + Decimal("0.403") + Decimal("0.12") + Decimal("0.1825")
    expected += Decimal("0.25") + Decimal("0.1126625") + Decimal("0.352")
    assert total == expected * PICOS_PER_USD


def test_anthropic_usage_input_is_the_total_of_uncached_cache_writes_and_cache_reads():
    (sonnet, haiku) = read_report("anthropic", _load("anthropic_usage_messages.json"))
    assert sonnet.input_tokens == 152000 + 20000 + 48000 + 410000
    assert sonnet.cache_read_tokens == 410000
    assert sonnet.cache_write_tokens == 68000
    assert sonnet.output_tokens == 61500
    assert sonnet.requests is None  # the usage report does not count requests
    assert sonnet.workspace_id == "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"
    assert sonnet.api_key_id == "apikey_01Rj2N8SVvo6BePZj99NhmiT"
    assert haiku.input_tokens == 30500 and haiku.cache_write_tokens == 0


def test_anthropic_cost_amounts_are_cents():
    results = read_report("anthropic", _load("anthropic_cost_report.json"))
    assert results[0].cost_picos == 456_000_000_000  # "45.6" cents = 0.456 USD
    assert results[0].model == "claude-sonnet-4-5-20250929"
    assert results[3].model is None and results[3].line_item == "Web Search Usage"


def test_the_natural_key_ignores_the_figures_but_not_the_group():
    page = _load("openai_usage_completions.json")[1]  # type: ignore[index]
    (before,) = read_report("openai", page)
    page["data"][0]["results"][0]["output_tokens"] = 1  # a revised figure: the same result
    (revised,) = read_report("openai", page)
    page["data"][0]["results"][0]["project_id"] = "proj_other"  # another group
    (other,) = read_report("openai", page)
    assert before.natural_key == revised.natural_key != other.natural_key


def test_a_report_of_the_other_provider_is_refused_with_every_problem():
    with pytest.raises(InvalidReport) as caught:
        read_report("anthropic", _load("openai_costs.json"))
    assert len(caught.value.problems) == 2  # both buckets lack starting_at / ending_at
    with pytest.raises(InvalidReport, match="not an OpenAI usage or cost result"):
        read_report("openai", {"data": [{"start_time": 0, "end_time": 1, "results": [{}]}]})


@pytest.mark.parametrize("kind", [{}, [], 7])
def test_a_result_whose_object_is_not_a_string_is_refused(kind):
    report = {"data": [{"start_time": 0, "end_time": 1, "results": [{"object": kind}]}]}
    with pytest.raises(InvalidReport, match="object: expected a string"):
        read_report("openai", report)


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"amount": {"value": 0.5, "currency": "usd"}}, "decimal string, not float"),
        ({"amount": {"value": "1.5", "currency": "eur"}}, "only USD"),
        ({"amount": "oops"}, "expected an object"),
    ],
)
def test_bad_amounts_are_refused(result, problem):
    document = {
        "data": [
            {
                "start_time": 0,
                "end_time": 86400,
                "results": [{"object": "organization.costs.result", **result}],
            }
        ]
    }
    with pytest.raises(InvalidReport, match=problem):
        read_report("openai", document)


def test_negative_or_fractional_token_counts_are_refused():
    document = {
        "data": [
            {
                "starting_at": "2026-11-01T00:00:00Z",
                "ending_at": "2026-11-02T00:00:00Z",
                "results": [{"uncached_input_tokens": -3, "output_tokens": Decimal("1.5")}],
            }
        ]
    }
    with pytest.raises(InvalidReport) as caught:
        read_report("anthropic", document)
    assert "uncached_input_tokens: expected a non-negative integer" in str(caught.value)
