"""The providers' console CSV exports imported over HTTP and with ``p402 import``, reconciled
like the same data imported as Admin API JSON, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from p402.api import create_app
from p402.api.cli import main
from p402.api.server import BackgroundServer
from p402.ledger.clock import from_iso
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.imports import IMPORTED
from p402.ledger.keys import Role, create_key, resolve_key

FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"
CSV = "text/csv"
EXPORTS = {
    "openai": ("openai_activity_export.csv", "openai_cost_export.csv"),
    "anthropic": ("anthropic_usage_export.csv", "anthropic_cost_export.csv"),
}
REPORTS = {
    "openai": ("openai_usage_completions.json", "openai_costs.json"),
    "anthropic": ("anthropic_usage_messages.json", "anthropic_cost_report.json"),
}


def _post(client, key, provider, body, content_type=CSV):
    return client.post(
        f"/v1/imports/{provider}",
        content=body,
        headers={"content-type": content_type, "x-p402-api-key": key},
    )


def _fixture(name):
    return (FIXTURES / name).read_bytes()


def _stored(engine):
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(IMPORTED)).scalar()


@pytest.mark.parametrize(
    ("provider", "name", "results"),
    [
        ("openai", "openai_activity_export.csv", 3),
        ("openai", "openai_cost_export.csv", 7),
        ("anthropic", "anthropic_usage_export.csv", 3),
        ("anthropic", "anthropic_cost_export.csv", 5),
    ],
)
def test_each_export_imports_once_and_again_changes_nothing(
    client, keys, engine, provider, name, results
):
    first = _post(client, keys["admin"], provider, _fixture(name), f"{CSV}; charset=utf-8")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "provider": provider,
        "results": results,
        "inserted": results,
        "updated": 0,
        "unchanged": 0,
    }
    again = _post(client, keys["admin"], provider, _fixture(name)).json()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, results)
    assert _stored(engine) == results


def test_a_revised_export_updates_its_rows_in_place(client, keys, engine):
    _post(client, keys["admin"], "anthropic", _fixture("anthropic_cost_export.csv"))
    revised = _fixture("anthropic_cost_export.csv").replace(b",0.0305,", b",0.0405,", 1)
    answer = _post(client, keys["admin"], "anthropic", revised).json()
    assert (answer["inserted"], answer["updated"], answer["unchanged"]) == (0, 1, 4)
    with engine.connect() as connection:
        costs = connection.execute(select(IMPORTED.c.cost_picos)).scalars().all()
    assert len(costs) == 5 and 40_500_000_000 in costs and 30_500_000_000 not in costs


def test_a_csv_of_neither_export_is_refused_naming_its_missing_columns(client, keys, engine):
    admin = keys["admin"]
    wrong = _post(client, admin, "openai", b"day,model,spend\n2026-11-01,gpt-5,1.00\n")
    assert wrong.status_code == 400
    error = wrong.json()["error"]
    assert error["code"] == "invalid_report"
    assert "amount_value, amount_currency" in error["message"]
    assert "input_tokens" in error["message"] and "day, model, spend" in error["message"]
    other = _post(client, admin, "openai", _fixture("anthropic_cost_export.csv"))
    assert other.status_code == 400
    assert "looks like an Anthropic cost export" in other.json()["error"]["message"]
    empty = _post(client, admin, "anthropic", b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    not_utf8 = _post(
        client, admin, "anthropic", "usage_date_utc,cost_usd\n2026-11-01,1 €\n".encode("cp1252")
    )
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["error"]["message"]
    assert _stored(engine) == 0


def test_bad_rows_answer_422_naming_each_row_and_nothing_is_written(client, keys, engine):
    _post(client, keys["admin"], "openai", _fixture("openai_cost_export.csv"))
    lines = _fixture("openai_cost_export.csv").decode().splitlines(keepends=True)
    lines[3] = lines[3].replace(",0.403,", ",0.4o3,")
    lines[6] = lines[6].replace(",usd,", ",eur,")
    lines.append('1793664000,1793750400,,,1.00,usd,,,"gpt-5-mini-2025-08-07, input",,,p,,,,,\n')
    answer = _post(client, keys["admin"], "openai", "".join(lines).encode())
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_report"
    assert "row 4: amount_value" in error["message"]
    assert "row 7: amount_currency: only USD" in error["message"]
    assert _stored(engine) == 7  # the good rows of the refused file were not imported either
    with engine.connect() as connection:
        costs = connection.execute(select(IMPORTED.c.cost_picos)).scalars().all()
    assert 403_000_000_000 in costs


def test_other_media_types_are_still_refused_and_json_still_works(client, keys):
    text = _post(client, keys["admin"], "openai", _fixture("openai_cost_export.csv"), "text/plain")
    assert text.status_code == 415
    assert "text/csv" in text.json()["error"]["message"]
    as_json = _post(
        client, keys["admin"], "openai", _fixture("openai_costs.json"), "application/json"
    )
    assert as_json.status_code == 200 and as_json.json()["inserted"] == 7
    csv_as_json = _post(
        client, keys["admin"], "openai", _fixture("openai_cost_export.csv"), "application/json"
    )
    assert csv_as_json.status_code == 400
    assert (
        client.post(
            "/v1/imports/openai",
            content=_fixture("openai_cost_export.csv"),
            headers={"content-type": CSV, "x-p402-api-key": keys["read"]},
        ).status_code
        == 403
    )


def test_console_names_attribute_csv_results_through_the_mapping(client, keys, engine):
    mapping = [
        {
            "provider": "anthropic",
            "field": "workspace_id",
            "value": "Research",
            "department": "research",
        },
        {
            "provider": "anthropic",
            "field": "api_key_id",
            "value": "support-bot, eu",
            "department": "support",
            "employee": "bob",
        },
    ]
    admin = {"x-p402-api-key": keys["admin"]}
    assert client.put("/v1/imports/mappings", json=mapping, headers=admin).status_code == 200
    _post(client, keys["admin"], "anthropic", _fixture("anthropic_usage_export.csv"))
    with engine.connect() as connection:
        owners = connection.execute(
            select(IMPORTED.c.provider_api_key_id, IMPORTED.c.department, IMPORTED.c.employee)
        ).all()
    assert sorted(owners) == [
        ("legal-assistant", "research", None),
        ("legal-assistant", "research", None),
        ("support-bot, eu", "support", "bob"),
    ]


# --- reconciliation: the same data as CSV and as JSON ---------------------------------------


def _metered(engine, key):
    day = from_iso("2026-11-01T12:00:00Z")
    insert_events(
        engine,
        resolve_key(engine, key).tenant_id,
        [
            EventRecord(
                event_id=f"m-{provider}-{n}",
                ts_ms=day + n,
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                provider=provider,
                operation="chat",
                model_used=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_picos=cost_picos,
                department="legal" if n == 0 else None,
            )
            for provider, model, input_tokens, output_tokens, cost_picos in (
                ("openai", "gpt-5-mini-2025-08-07", 1_000_000, 150_000, 400_000_000_000),
                ("anthropic", "claude-sonnet-4-5-20250929", 500_000, 50_000, 2_000_000_000_000),
            )
            for n in range(2)
        ],
    )


def _reconciliation(client, key, provider):
    answer = client.get(
        f"/v1/reconciliation?provider={provider}&from=2026-10-01&to=2026-12-01",
        headers={"x-p402-api-key": key},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_reconciliation_of_csv_exports_matches_the_same_data_imported_as_json(
    client, keys, engine, provider
):
    csv_admin = keys["admin"]
    json_admin = create_key(engine, tenant="globex", role=Role.ADMIN)[1]
    field, csv_value, json_value = {
        "openai": ("project_id", "proj_legal8Fq2", "proj_legal8Fq2"),
        "anthropic": ("workspace_id", "Research", "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"),
    }[provider]
    for key, names, content_type, value in (
        (csv_admin, EXPORTS[provider], CSV, csv_value),
        (json_admin, REPORTS[provider], "application/json", json_value),
    ):
        mapping = [{"provider": provider, "field": field, "value": value, "department": "legal"}]
        put = client.put("/v1/imports/mappings", json=mapping, headers={"x-p402-api-key": key})
        assert put.status_code == 200, put.text
        for name in names:
            assert _post(client, key, provider, _fixture(name), content_type).status_code == 200
        _metered(engine, key)

    from_csv = _reconciliation(client, csv_admin, provider)
    from_json = _reconciliation(client, json_admin, provider)
    assert from_csv["totals"] == from_json["totals"]
    (total,) = from_csv["totals"]
    assert total["provider_unmapped_usd"] != total["provider_cost_usd"]  # the mapping applied
    assert total["cost_coverage_pct"] is not None and total["price_drift_pct"] is not None
    if provider == "openai":
        assert from_csv["data"] == from_json["data"]
        (legal_day,) = [
            row
            for row in from_csv["data"]
            if row["day"] == "2026-11-01" and row["model"] == "gpt-5-mini-2025-08-07"
        ]
        assert legal_day["provider_cost_usd"] == "0.53345"
        assert legal_day["provider_unmapped_usd"] == "0"
        assert legal_day["metered_cost_usd"] == "0.8"
    else:
        # Anthropic's cost export names models by display name (the alias
        # claude-sonnet-4-5): its costs reconcile under the one snapshot of that alias the
        # same day names, beside its tokens and the metered events
        assert from_csv["data"] == from_json["data"]
        models = {row["model"] for row in from_csv["data"]}
        assert "claude-sonnet-4-5-20250929" in models and "claude-sonnet-4-5" not in models


# --- p402 import -----------------------------------------------------------------------------


@pytest.fixture
def server(engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(engine)) as running:
        yield running


def _invoke(*args: str, env: dict[str, str]):
    return CliRunner().invoke(main, list(args), env=env)


def test_p402_import_sends_csv_exports_as_csv_and_json_reports_as_json(
    server, engine, keys, tmp_path
):
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": keys["admin"]}
    # a download renamed without its extension is recognised by its content
    activity = tmp_path / "activity-download"
    activity.write_bytes(_fixture("openai_activity_export.csv"))
    files = [str(activity), str(FIXTURES / "openai_cost_export.csv")]
    result = _invoke("import", "openai", *files, env=env)
    assert result.exit_code == 0, result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["file"], o["results"], o["inserted"]) for o in outcomes] == [
        (files[0], 3, 3),
        (files[1], 7, 7),
    ]
    assert "openai_cost_export.csv: 7 results, 7 new, 0 updated, 0 unchanged" in result.stderr
    again = _invoke(
        "import", "openai", files[1], str(FIXTURES / "openai_usage_completions.json"), env=env
    )
    assert again.exit_code == 0, again.stderr
    assert [json.loads(line)["inserted"] for line in again.stdout.splitlines()] == [0, 3]
    assert _stored(engine) == 13

    wrong = _invoke("import", "anthropic", files[1], env=env)
    assert wrong.exit_code == 1
    assert "HTTP 400, invalid_report" in wrong.stderr and "cost_usd" in wrong.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("usage_date_utc,cost_usd\n2026-11-01,1.00\n2026-11-02,lots\n")
    refused = _invoke("import", "anthropic", str(bad), env=env)
    assert refused.exit_code == 1
    assert "HTTP 422, invalid_report" in refused.stderr and "row 3: cost_usd" in refused.stderr
    assert _stored(engine) == 13
