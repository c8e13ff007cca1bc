"""Historical import of provider reports, its attribution mapping, and reconciliation against
the metered events, over HTTP on both databases."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from p402.ledger.clock import from_iso
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.imports import IMPORTED
from p402.ledger.keys import resolve_key
from p402.ledger.rollups import DAY_MS

FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"
JSON = {"content-type": "application/json"}


def _import(client, key, provider, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"/v1/imports/{provider}", content=content, headers={**JSON, "x-p402-api-key": key}
    )


def _fixture(name):
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("provider", "name", "results"),
    [
        ("openai", "openai_usage_completions.json", 3),
        ("openai", "openai_costs.json", 7),
        ("anthropic", "anthropic_usage_messages.json", 2),
        ("anthropic", "anthropic_cost_report.json", 5),
    ],
)
def test_each_fixture_imports_once_and_again_changes_nothing(
    client, keys, engine, provider, name, results
):
    first = _import(client, keys["admin"], provider, _fixture(name))
    assert first.status_code == 200, first.text
    assert first.json() == {
        "provider": provider,
        "results": results,
        "inserted": results,
        "updated": 0,
        "unchanged": 0,
    }
    again = _import(client, keys["admin"], provider, _fixture(name))
    assert again.json()["inserted"] == 0 and again.json()["unchanged"] == results
    with engine.connect() as connection:
        stored = connection.execute(select(IMPORTED.c.provider)).scalars().all()
    assert stored == [provider] * results


def test_a_revised_report_updates_its_results_in_place(client, keys, engine):
    _import(client, keys["admin"], "openai", _fixture("openai_costs.json"))
    revised = json.loads(_fixture("openai_costs.json"))
    revised["data"][0]["results"][0]["amount"]["value"] = 0.2
    answer = _import(client, keys["admin"], "openai", revised).json()
    assert (answer["inserted"], answer["updated"], answer["unchanged"]) == (0, 1, 6)
    with engine.connect() as connection:
        costs = connection.execute(select(IMPORTED.c.cost_picos)).scalars().all()
    assert len(costs) == 7 and 200_000_000_000 in costs and 130_450_000_000 not in costs


def test_imports_need_an_admin_key_json_and_a_known_provider(client, keys):
    body = _fixture("openai_costs.json")
    assert _import(client, keys["read"], "openai", body).status_code == 403
    assert _import(client, keys["ingest"], "openai", body).status_code == 403
    unknown = _import(client, keys["admin"], "mistral", body)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong = _import(client, keys["admin"], "anthropic", body)
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_report"
    bad_json = _import(client, keys["admin"], "openai", b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    text = client.post(
        "/v1/imports/openai",
        content=body,
        headers={"content-type": "text/plain", "x-p402-api-key": keys["admin"]},
    )
    assert text.status_code == 415


def test_the_mapping_attributes_imports_and_follows_its_changes(client, keys, engine):
    admin = {"x-p402-api-key": keys["admin"]}
    mapping = [
        {
            "provider": "openai",
            "field": "project_id",
            "value": "proj_legal8Fq2",
            "department": "legal",
            "project": "phoenix",
        },
        {
            "provider": "anthropic",
            "field": "workspace_id",
            "value": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
            "department": "engineering",
        },
        {
            "provider": "anthropic",
            "field": "api_key_id",
            "value": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
            "department": "research",
            "employee": "alice",
        },
    ]
    put = client.put("/v1/imports/mappings", json=mapping, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json()["reattributed"] == 0
    _import(client, keys["admin"], "openai", _fixture("openai_usage_completions.json"))
    _import(client, keys["admin"], "anthropic", _fixture("anthropic_usage_messages.json"))

    def owners():
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    IMPORTED.c.provider_project_id,
                    IMPORTED.c.provider_api_key_id,
                    IMPORTED.c.department,
                    IMPORTED.c.project,
                    IMPORTED.c.employee,
                )
            ).all()
        return {(row[0] or row[1]): tuple(row[2:]) for row in rows}

    attributed = owners()
    assert attributed["proj_legal8Fq2"] == ("legal", "phoenix", None)
    assert attributed["proj_mktg3Lw9"] == (None, None, None)
    # the API key is more specific than the workspace: its department wins
    assert attributed["apikey_01Rj2N8SVvo6BePZj99NhmiT"] == ("research", None, "alice")
    assert attributed["apikey_01Hx7T2cWq9ZyJ4mNbV8aKeP"] == (None, None, None)

    changed = client.put("/v1/imports/mappings", json=mapping[1:2], headers=admin).json()
    assert changed["reattributed"] == 3  # two legal rows lose owners, alice's row moves
    attributed = owners()
    assert attributed["proj_legal8Fq2"] == (None, None, None)
    assert attributed["apikey_01Rj2N8SVvo6BePZj99NhmiT"] == ("engineering", None, None)
    listed = client.get("/v1/imports/mappings", headers={"x-p402-api-key": keys["read"]})
    assert listed.json()["data"] == [
        {
            "provider": "anthropic",
            "field": "workspace_id",
            "value": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
            "department": "engineering",
            "project": None,
            "employee": None,
        }
    ]


def test_bad_mapping_rules_are_refused_and_need_admin(client, keys):
    rule = {"provider": "openai", "field": "team_id", "value": "x", "department": "legal"}
    admin = {"x-p402-api-key": keys["admin"]}
    bad = client.put("/v1/imports/mappings", json=[rule], headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_mapping"
    twice = [{**rule, "field": "project_id"}] * 2
    assert client.put("/v1/imports/mappings", json=twice, headers=admin).status_code == 400
    read = {"x-p402-api-key": keys["read"]}
    assert client.put("/v1/imports/mappings", json=[], headers=read).status_code == 403


# --- reconciliation on a crafted case ------------------------------------------------------

DAY = "2026-10-15"
MODEL = "gpt-5-mini-2025-08-07"


def _event(event_id, *, cost_usd_cents, input_tokens, output_tokens, **owners):
    return EventRecord(
        event_id=event_id,
        ts_ms=from_iso(f"{DAY}T12:00:00Z"),
        usage_evidence="provider_response",
        cost_evidence="computed",
        privacy_mode="metadata_only",
        provider="openai",
        operation="chat",
        model_requested="gpt-5-mini",
        model_used=MODEL,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_picos=cost_usd_cents * 10**10,
        **owners,
    )


def _crafted_reports():
    start = from_iso(DAY) // 1000
    bucket = {"object": "bucket", "start_time": start, "end_time": start + 86400}
    usage = {
        "object": "page",
        "data": [
            {
                **bucket,
                "results": [
                    {
                        "object": "organization.usage.completions.result",
                        "input_tokens": 1_000_000,
                        "output_tokens": 250_000,
                        "input_cached_tokens": 0,
                        "num_model_requests": 9,
                        "project_id": "proj_legal",
                        "model": MODEL,
                    },
                ],
            }
        ],
    }
    costs = {
        "object": "page",
        "data": [
            {
                **bucket,
                "results": [
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": "1.80", "currency": "usd"},
                        "line_item": f"{MODEL}, input",
                        "project_id": "proj_legal",
                    },
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": "1.20", "currency": "usd"},
                        "line_item": f"{MODEL}, output",
                        "project_id": "proj_other",
                    },
                ],
            }
        ],
    }
    return usage, costs


def test_reconciliation_reports_coverage_unattributed_spend_and_drift(client, keys, engine):
    tenant = resolve_key(engine, keys["read"]).tenant_id
    insert_events(
        engine,
        tenant,
        [
            _event(
                "e1",
                cost_usd_cents=150,
                input_tokens=600_000,
                output_tokens=200_000,
                department="legal",
            ),
            _event("e2", cost_usd_cents=50, input_tokens=100_000, output_tokens=100_000),
        ],
    )
    usage, costs = _crafted_reports()
    client.put(
        "/v1/imports/mappings",
        json=[
            {
                "provider": "openai",
                "field": "project_id",
                "value": "proj_legal",
                "department": "legal",
            }
        ],
        headers={"x-p402-api-key": keys["admin"]},
    )
    _import(client, keys["admin"], "openai", usage)
    _import(client, keys["admin"], "openai", costs)

    answer = client.get(
        "/v1/reconciliation?provider=openai&from=2026-10-01&to=2026-11-01",
        headers={"x-p402-api-key": keys["read"]},
    )
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["data"]
    assert row == {
        "provider": "openai",
        "day": DAY,
        "model": MODEL,
        "provider_cost_usd": "3",
        "provider_unmapped_usd": "1.2",
        "provider_input_tokens": 1_000_000,
        "provider_output_tokens": 250_000,
        "provider_cache_read_tokens": 0,
        "provider_cache_write_tokens": None,
        "provider_requests": 9,
        "metered_cost_usd": "2",
        "metered_unowned_usd": "0.5",
        "metered_events": 2,
        "metered_unpriced_events": 0,
        "metered_input_tokens": 700_000,
        "metered_output_tokens": 300_000,
        "cost_coverage_pct": "66.67",  # 2 / 3
        "token_coverage_pct": "80",  # 1,000,000 / 1,250,000
        "cost_gap_usd": "1",
        "unmatched_provider_usd": "1",
        "provider_usd_per_mtok": "2.4",  # 3 USD / 1.25 M tokens
        "metered_usd_per_mtok": "2",  # 2 USD / 1 M tokens
        "price_drift_pct": "20",
    }
    (total,) = answer.json()["totals"]
    assert total["provider"] == "openai" and total["cost_coverage_pct"] == "66.67"

    outside = client.get(
        "/v1/reconciliation?from=2026-11-01", headers={"x-p402-api-key": keys["read"]}
    )
    assert outside.json()["data"] == []


def test_metered_days_without_a_provider_report_have_no_coverage(client, keys, engine):
    tenant = resolve_key(engine, keys["read"]).tenant_id
    insert_events(
        engine, tenant, [_event("e1", cost_usd_cents=10, input_tokens=5, output_tokens=5)]
    )
    answer = client.get(
        "/v1/reconciliation?provider=openai", headers={"x-p402-api-key": keys["read"]}
    ).json()
    (row,) = answer["data"]
    assert row["metered_cost_usd"] == "0.1"
    assert row["provider_cost_usd"] is None
    assert row["cost_coverage_pct"] is None and row["price_drift_pct"] is None
    assert row["unmatched_provider_usd"] is None


def test_reconciliation_is_scoped_to_the_tenant(client, keys):
    _, costs = _crafted_reports()
    _import(client, keys["admin"], "openai", costs)
    mine = client.get("/v1/reconciliation", headers={"x-p402-api-key": keys["read"]}).json()
    theirs = client.get(
        "/v1/reconciliation", headers={"x-p402-api-key": keys["globex_read"]}
    ).json()
    assert len(mine["data"]) == 1 and theirs == {"data": [], "totals": [], "next_cursor": None}
    assert client.get("/v1/reconciliation").status_code == 401
    assert (
        client.get("/v1/reconciliation", headers={"x-p402-api-key": keys["ingest"]}).status_code
        == 403
    )


def test_the_formulas_are_in_the_openapi_description(client):
    operation = client.get("/schema/openapi.json").json()["paths"]["/v1/reconciliation"]["get"]
    for formula in (
        "cost_coverage_pct`` = metered_cost_usd / provider_cost_usd * 100",
        "price_drift_pct",
        "unmatched_provider_usd",
        "metered_unowned_usd",
    ):
        assert formula in operation["description"]


def _pages(client, key, path):
    """Every item of a list, a page of two at a time, and the answers of each page."""
    pages = []
    cursor = None
    while True:
        query = f"{'&' if '?' in path else '?'}limit=2" + (f"&cursor={cursor}" if cursor else "")
        answer = client.get(path + query, headers={"x-p402-api-key": key})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return [item for page in pages for item in page["data"]], pages


def test_reconciliation_rows_page_with_a_cursor_and_totals_cover_every_page(client, keys, engine):
    tenant = resolve_key(engine, keys["read"]).tenant_id
    base = _event("e0", cost_usd_cents=10, input_tokens=5, output_tokens=5)
    events = [
        replace(base, event_id=f"e{day}{model}", ts_ms=base.ts_ms + day * DAY_MS, model_used=model)
        for day in range(3)
        for model in ("gpt-5-mini", "gpt-5")
    ]
    insert_events(engine, tenant, events[:5])
    path = "/v1/reconciliation?provider=openai"
    whole = client.get(path + "&limit=1000", headers={"x-p402-api-key": keys["read"]}).json()
    assert len(whole["data"]) == 5 and whole["next_cursor"] is None
    rows, pages = _pages(client, keys["read"], path)
    assert rows == whole["data"]
    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert all(page["totals"] == whole["totals"] for page in pages)
    assert whole["totals"][0]["metered_events"] == 5
    bad = client.get(path + "&cursor=zzz", headers={"x-p402-api-key": keys["read"]})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_cursor")


def test_import_mapping_rules_page_with_a_cursor(client, keys):
    rules = [
        {"provider": provider, "field": field, "value": value, "department": "legal"}
        for provider, field, value in [
            ("openai", "project_id", "proj_b"),
            ("anthropic", "workspace_id", "wrkspc_a"),
            ("openai", "project_id", "proj_a"),
            ("anthropic", "api_key_id", "apikey_a"),
            ("openai", "api_key_id", "key_a"),
        ]
    ]
    put = client.put("/v1/imports/mappings", json=rules, headers={"x-p402-api-key": keys["admin"]})
    assert put.status_code == 200, put.text
    listed, pages = _pages(client, keys["read"], "/v1/imports/mappings")
    assert [(rule["provider"], rule["field"], rule["value"]) for rule in listed] == [
        ("anthropic", "api_key_id", "apikey_a"),
        ("anthropic", "workspace_id", "wrkspc_a"),
        ("openai", "api_key_id", "key_a"),
        ("openai", "project_id", "proj_a"),
        ("openai", "project_id", "proj_b"),
    ]
    assert len(pages) == 3
