"""Reading the providers' console CSV exports: recognised by their header, the same results as
the Admin API reports, exact money, and every unreadable row named."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from p402.instrumentation.money import PICOS_PER_USD
from p402.ledger.clock import from_iso
from p402.ledger.provider_csv import InvalidRows, anthropic_model_id, looks_like_csv, read_csv
from p402.ledger.provider_reports import InvalidReport, read_report

FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"
OPENAI_COST_HEADER = (
    "start_time,end_time,start_time_iso,end_time_iso,amount_value,amount_currency,quantity,"
    "quantity_unit,line_item,user_id,api_key_id,project_id,organization_id,project_name,"
    "organization_name,user_email,api_source"
)
ANTHROPIC_USAGE_HEADER = (
    "usage_date_utc,model_version,api_key,workspace,usage_type,context_window,"
    "usage_input_tokens_no_cache,usage_input_tokens_cache_write_5m,"
    "usage_input_tokens_cache_write_1h,usage_input_tokens_cache_read,usage_output_tokens,"
    "web_search_count,inference_geo,speed"
)


def _csv(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _json(name: str) -> object:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


def _figures(results):
    return sorted(
        (
            r.kind,
            r.bucket_start_ms // 86_400_000,
            r.model or "",
            r.project_id or "",
            r.input_tokens or 0,
            r.output_tokens or 0,
            r.cache_read_tokens or 0,
            r.requests or 0,
            r.cost_picos or 0,
        )
        for r in results
    )


@pytest.mark.parametrize(
    ("csv_name", "json_name"),
    [
        ("openai_cost_export.csv", "openai_costs.json"),
        ("openai_activity_export.csv", "openai_usage_completions.json"),
    ],
)
def test_openai_exports_read_as_the_admin_api_reports_of_the_same_days(csv_name, json_name):
    from_csv = read_csv("openai", _csv(csv_name))
    assert _figures(from_csv) == _figures(read_report("openai", _json(json_name)))
    assert len({result.natural_key for result in from_csv}) == len(from_csv)


def test_anthropic_exports_sum_to_the_admin_api_reports_of_the_same_day():
    usage = read_csv("anthropic", _csv("anthropic_usage_export.csv"))
    reported = read_report("anthropic", _json("anthropic_usage_messages.json"))
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert sum(getattr(r, name) for r in usage) == sum(getattr(r, name) for r in reported)
    sonnet = usage[0]
    # hourly rows: the hour they start; input is the sum of its four columns
    assert (sonnet.bucket_start_ms, sonnet.bucket_end_ms) == (
        from_iso("2026-11-01T09:00:00Z"),
        from_iso("2026-11-01T10:00:00Z"),
    )
    assert (sonnet.input_tokens, sonnet.cache_read_tokens, sonnet.cache_write_tokens) == (
        400_000,
        250_000,
        50_000,
    )
    assert (sonnet.api_key_id, sonnet.workspace_id) == ("legal-assistant", "Research")
    assert usage[2].api_key_id == "support-bot, eu"  # a quoted comma stays in its column

    cost = read_csv("anthropic", _csv("anthropic_cost_export.csv"))
    json_cost = read_report("anthropic", _json("anthropic_cost_report.json"))
    assert sum(r.cost_picos for r in cost) == sum(r.cost_picos for r in json_cost)
    assert cost[0].cost_picos == Decimal("0.456") * PICOS_PER_USD  # USD, not cents
    assert (cost[0].model, cost[0].line_item) == (
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5, input_no_cache",
    )
    assert cost[0].api_key_id == "apikey_01Rj2N8SVvo6BePZj99NhmiT"  # the id column wins
    assert (cost[3].model, cost[3].line_item) == (None, "web_search")
    assert {r.bucket_end_ms - r.bucket_start_ms for r in cost} == {86_400_000}


def test_amounts_are_exact_decimals_and_counts_may_be_written_as_decimals():
    csv = (
        f"{OPENAI_COST_HEADER}\n"
        "1793491200,1793577600,,,0.000000000001000000000000000000,USD,,,x,,,,,,,,\n"
        "1793491200,1793577600,,,123456.789012345678,usd,,,y,,,,,,,,\n"
    )
    tiny, large = read_csv("openai", csv.encode())
    assert tiny.cost_picos == 1
    assert large.cost_picos == 123_456_789_012_345_678
    usage = read_csv(
        "openai", b"start_time,end_time,input_tokens,num_model_requests\n0,60,59200.0,3.0\n"
    )
    assert (usage[0].input_tokens, usage[0].requests, usage[0].output_tokens) == (59200, 3, None)


def test_a_header_of_neither_export_names_the_missing_columns():
    with pytest.raises(InvalidReport) as refused:
        read_csv("openai", b"date,model,tokens\n2026-11-01,gpt-5,10\n")
    message = str(refused.value)
    assert not isinstance(refused.value, InvalidRows)
    assert "the cost export needs start_time, end_time, amount_value, amount_currency" in message
    assert "the activity (usage) export needs start_time, end_time, input_tokens" in message
    assert "the header has date, model, tokens" in message
    with pytest.raises(InvalidReport, match="looks like an Anthropic usage export"):
        read_csv("openai", _csv("anthropic_usage_export.csv"))
    with pytest.raises(InvalidReport, match=r"usage export needs .*model_version"):
        read_csv("anthropic", b"usage_date_utc,usage_output_tokens\n2026-11-01,1\n")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the CSV is empty"),
        (b"\n\n", "the CSV is empty"),
        (b"a,a\n1,2\n", "the header names a more than once"),
        (b'start_time,end_time,input_tokens\n0,60,"1\n', "not a CSV file"),
        (b"start_time,end_time,input_tokens\n0,60,1\x00\n", "NUL"),
        (b"start_time,end_time,input_tokens\n0,60,\xff\n", "not utf-8 text"),
    ],
)
def test_what_is_not_a_readable_csv_is_refused(body, message):
    with pytest.raises(InvalidReport, match=message):
        read_csv("openai", body)


def test_every_bad_row_is_named_and_nothing_is_read():
    csv = (
        f"{ANTHROPIC_USAGE_HEADER}\n"
        "2026-11-01,claude-x,k,w,standard,,10,0,0,0,5,0,,\n"
        "yesterday,claude-x,k,w,standard,,10,0,0,0,5,0,,\n"
        "2026-11-01,claude-x,k,w,standard,,-3,0,0,0,5,0,,\n"
        "2026-11-01,claude-x,k,w,standard,,10.5,0,0,0,5,0,,\n"
        "2026-11-01,claude-x\n"
        "2026-11-01,claude-x,k,w,standard,,10,0,0,0,5,0,,,surplus\n"
    )
    with pytest.raises(InvalidRows) as refused:
        read_csv("anthropic", csv.encode())
    problems = refused.value.problems
    assert [problem.split(":")[0] for problem in problems] == [
        "row 3",
        "row 4",
        "row 5",
        "row 6",
        "row 7",
    ]
    assert "usage_date_utc" in problems[0]
    assert "usage_input_tokens_no_cache" in problems[1] and "'-3'" in problems[1]
    assert "'10.5'" in problems[2]
    assert "2 fields, the header names 14" in problems[3]


def test_bad_money_and_currency_are_refused_by_row():
    csv = (
        f"{OPENAI_COST_HEADER}\n"
        "1793491200,1793577600,,,1.5,eur,,,x,,,,,,,,\n"
        "1793491200,1793577600,,,NaN,usd,,,x,,,,,,,,\n"
        "1793491200,1793577600,,,1e30,usd,,,x,,,,,,,,\n"
        "1793491200,1793577600,,,,usd,,,x,,,,,,,,\n"
        "2026-11-01,1793577600,,,1,usd,,,x,,,,,,,,\n"
    )
    with pytest.raises(InvalidRows) as refused:
        read_csv("openai", csv.encode())
    problems = refused.value.problems
    assert "only USD" in problems[0] and "row 2" in problems[0]
    assert "amount_value" in problems[1] and "amount_value" in problems[3]
    assert "out of range" in problems[2]
    assert "start_time" in problems[4] and "row 6" in problems[4]


def test_empty_buckets_yield_nothing_and_an_export_of_them_alone_is_accepted():
    empty = b"start_time,end_time,start_time_iso,end_time_iso\n0,86400,1970-01-01,1970-01-02\n"
    assert read_csv("openai", empty) == []
    assert len(read_csv("openai", _csv("openai_cost_export.csv"))) == 7  # the blank day is out


def test_rows_alike_in_every_grouping_column_are_kept_apart_and_stay_so_on_reimport():
    row = "1793491200,1793577600,,,{},usd,,,x,,,proj,,,,,\n"
    csv = f"{OPENAI_COST_HEADER}\n{row.format('1')}{row.format('2')}".encode()
    first = read_csv("openai", csv)
    assert [r.cost_picos for r in first] == [PICOS_PER_USD, 2 * PICOS_PER_USD]
    assert len({r.natural_key for r in first}) == 2
    assert [r.natural_key for r in read_csv("openai", csv)] == [r.natural_key for r in first]
    # a name changing (not an id) keeps the result's identity
    renamed = csv.replace(b"proj,,,,,", b"proj,,Renamed,,,")
    assert [r.natural_key for r in read_csv("openai", renamed)] == [r.natural_key for r in first]


def test_a_bom_crlf_lines_and_another_charset_are_read():
    text = "\ufeff" + ANTHROPIC_USAGE_HEADER + "\r\n2026-11-01,claude-x,clé,w,,,1,0,0,0,2,0,,\r\n"
    (utf8,) = read_csv("anthropic", text.encode("utf-8"))
    assert utf8.api_key_id == "clé"
    (latin,) = read_csv("anthropic", text[1:].encode("latin-1"), charset="ISO-8859-1")
    assert latin.api_key_id == "clé" and latin.natural_key == utf8.natural_key
    with pytest.raises(InvalidReport, match="unknown charset"):
        read_csv("anthropic", text.encode(), charset="klingon")


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("Claude 3.5 Sonnet 2024-10-22", "claude-3-5-sonnet-20241022"),
        ("Claude Sonnet 4.5", "claude-sonnet-4-5"),
        ("Claude Opus 4.1", "claude-opus-4-1"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
        (None, None),
    ],
)
def test_console_display_names_read_as_model_ids(name, model):
    assert anthropic_model_id(name) == model


def test_csv_files_are_told_from_json_by_extension_or_content():
    assert looks_like_csv("costs.CSV", b"{")
    assert not looks_like_csv("costs.json", b"a,b\n")
    assert looks_like_csv("download", b"\xef\xbb\xbfstart_time,end_time\n")
    assert not looks_like_csv("download", b'  [{"data": []}]')
    assert not looks_like_csv("download", b"not a report")
