"""``GET /v1/export``: CSV, FOCUS CSV and the finance bundle, over HTTP on both databases."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from decimal import Decimal

from p402.ledger.clock import from_iso
from p402.ledger.events import EVENT_FIELDS, EventRecord, insert_events
from p402.ledger.focus import FOCUS_COLUMNS
from p402.ledger.keys import resolve_key

BASE = {
    "timestamp": "2026-11-20T09:30:00Z",
    "provider": "openai",
    "operation": "chat",
    "model_requested": "gpt-5-mini",
    "model_used": "gpt-5-mini-2025-08-07",
    "input_tokens": 1342,
    "output_tokens": 214,
    "cache_read_tokens": 1024,
    "reasoning_tokens": 192,
}
EVENTS = [
    {**BASE, "id": "ev-1", "department": "finance", "employee": "farid"},
    {
        **BASE,
        "id": "ev-2",
        "timestamp": "2026-11-21T10:00:00Z",
        "department": "legal",
        "project": "phoenix",
        "policy_reason": 'dept_policy=quality-first, "min_tier"=sonnet\nsecond line',
    },
    {
        **BASE,
        "id": "ev-3",
        "provider": "anthropic",
        "model_requested": "claude-sonnet-4-5",
        "model_used": "claude-sonnet-4-5-20250929",
        "input_tokens": 2500,
        "output_tokens": 800,
        "cache_read_tokens": 2000,
        "cache_write_tokens": 100,
        "reasoning_tokens": None,
        "department": "legal",
    },
    {**BASE, "id": "ev-4", "model_used": "in-house-llm", "department": "finance"},  # unpriced
]


def _ingest(client, keys, events=EVENTS):
    response = client.post(
        "/v1/events",
        content=json.dumps(events),
        headers={"x-p402-api-key": keys["ingest"], "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def _get(client, key, query):
    return client.get(f"/v1/export?{query}", headers={"x-p402-api-key": key})


def _spend_total(client, key, query=""):
    return client.get(f"/v1/spend?{query}", headers={"x-p402-api-key": key}).json()["total"]


def _rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def test_csv_has_the_event_fields_and_its_totals_equal_spend(client, keys):
    _ingest(client, keys)
    response = _get(client, keys["read"], "format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.headers["x-p402-total-events"] == "4"
    header = next(csv.reader(io.StringIO(response.text)))
    assert header == list(EVENT_FIELDS)
    rows = _rows(response.content)
    assert [row["id"] for row in rows] == ["ev-2", "ev-4", "ev-3", "ev-1"]  # newest first
    total = _spend_total(client, keys["read"])
    assert sum(Decimal(row["cost_usd"]) for row in rows if row["cost_usd"]) == Decimal(
        total["cost_usd"]
    )
    assert sum(int(row["input_tokens"]) for row in rows) == total["input_tokens"]
    by_id = {row["id"]: row for row in rows}
    assert by_id["ev-4"]["cost_usd"] == ""  # unpriced: empty, never 0
    assert by_id["ev-4"]["cost_evidence"] == "unpriced"
    assert by_id["ev-2"]["policy_reason"] == EVENTS[1]["policy_reason"]  # quoted, intact
    assert by_id["ev-1"]["cost_usd"] == "0.0005331"


def test_csv_takes_the_filters_of_the_event_list(client, keys):
    _ingest(client, keys)
    rows = _rows(_get(client, keys["read"], "department=legal").content)
    assert sorted(row["id"] for row in rows) == ["ev-2", "ev-3"]
    rows = _rows(_get(client, keys["read"], "from=2026-11-21T00:00:00Z").content)
    assert [row["id"] for row in rows] == ["ev-2"]
    legal = _spend_total(client, keys["read"], "department=legal")
    assert sum(
        Decimal(row["cost_usd"])
        for row in _rows(_get(client, keys["read"], "department=legal").content)
    ) == Decimal(legal["cost_usd"])


def test_long_exports_page_through_the_whole_ledger(client, keys, engine):
    tenant = resolve_key(engine, keys["read"]).tenant_id
    start = from_iso("2026-10-01")
    insert_events(
        engine,
        tenant,
        [
            EventRecord(
                event_id=f"bulk-{n:05d}",
                ts_ms=start + n * 1000 // 3,  # several events share a millisecond
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                provider="openai",
                model_used="gpt-5-mini-2025-08-07",
                input_tokens=10,
                output_tokens=2,
                cost_picos=1_000_003 * n,
            )
            for n in range(2345)
        ],
    )
    response = _get(client, keys["read"], "format=csv")
    rows = _rows(response.content)
    assert len(rows) == 2345 == len({row["id"] for row in rows})
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal(
        _spend_total(client, keys["read"])["cost_usd"]
    )


def test_focus_csv_has_the_focus_columns_exact_money_and_owners(client, keys):
    _ingest(client, keys)
    response = _get(client, keys["read"], "format=focus")
    assert response.status_code == 200
    header = next(csv.reader(io.StringIO(response.text)))
    assert tuple(header) == FOCUS_COLUMNS
    for column in (
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "BillingCurrency",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ChargeCategory",
        "ChargeDescription",
        "ProviderName",
        "PublisherName",
        "InvoiceIssuerName",
        "ServiceName",
        "ServiceCategory",
        "SkuId",
        "ResourceId",
        "ConsumedQuantity",
        "ConsumedUnit",
        "x_Department",
        "x_Employee",
        "x_TaskType",
    ):
        assert column in header
    rows = {row["x_EventId"]: row for row in _rows(response.content)}
    assert sum(Decimal(row["BilledCost"]) for row in rows.values() if row["BilledCost"]) == (
        Decimal(_spend_total(client, keys["read"])["cost_usd"])
    )
    first = rows["ev-1"]
    assert first["BilledCost"] == first["EffectiveCost"] == "0.0005331"
    assert first["BillingCurrency"] == "USD"
    assert (first["ConsumedQuantity"], first["ConsumedUnit"]) == ("1556", "Tokens")
    assert (first["ChargePeriodStart"], first["ChargePeriodEnd"]) == (
        "2026-11-20T00:00:00Z",
        "2026-11-21T00:00:00Z",
    )
    assert (first["BillingPeriodStart"], first["BillingPeriodEnd"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert (first["ProviderName"], first["PublisherName"]) == ("OpenAI", "OpenAI")
    assert first["ServiceCategory"] == "AI and Machine Learning"
    assert first["ChargeCategory"] == "Usage"
    assert first["SkuId"] == "openai/gpt-5-mini-2025-08-07"
    assert (first["x_Department"], first["x_Employee"]) == ("finance", "farid")
    assert json.loads(first["Tags"]) == {"department": "finance", "employee": "farid"}
    assert rows["ev-3"]["ProviderName"] == "Anthropic"
    assert rows["ev-3"]["x_CacheWriteTokens"] == "100"
    assert rows["ev-4"]["BilledCost"] == "" and rows["ev-4"]["x_CostEvidence"] == "unpriced"


def test_the_finance_bundle_holds_agreeing_files_and_a_manifest_of_their_hashes(client, keys):
    _ingest(client, keys)
    response = _get(client, keys["read"], "format=bundle&department=legal")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    assert archive.namelist() == ["events.csv", "events.json", "summary.json", "manifest.json"]
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["events"] == 2
    assert manifest["filters"] == {"department": "legal"}
    assert [entry["name"] for entry in manifest["files"]] == archive.namelist()[:3]
    for entry in manifest["files"]:
        data = archive.read(entry["name"])
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    csv_rows = _rows(archive.read("events.csv"))
    json_rows = json.loads(archive.read("events.json"))
    assert [row["id"] for row in csv_rows] == [event["id"] for event in json_rows]
    assert [row["cost_usd"] for row in csv_rows] == [event["cost_usd"] for event in json_rows]
    summary = json.loads(archive.read("summary.json"))
    spend = _spend_total(client, keys["read"], "department=legal")
    assert summary["total"]["cost_usd"] == spend["cost_usd"]
    assert summary["total"]["events"] == spend["events"] == 2
    assert {group["model"] for group in summary["by_model"]} == {
        "gpt-5-mini-2025-08-07",
        "claude-sonnet-4-5-20250929",
    }


def test_an_empty_export_is_a_header_or_an_empty_bundle(client, keys):
    response = _get(client, keys["read"], "format=csv")
    assert response.text.strip() == ",".join(EVENT_FIELDS)
    bundle = zipfile.ZipFile(io.BytesIO(_get(client, keys["read"], "format=bundle").content))
    assert json.loads(bundle.read("events.json")) == []
    assert json.loads(bundle.read("summary.json"))["total"]["cost_usd"] == "0"


def test_exports_need_a_read_key_and_stay_in_the_tenant(client, keys):
    _ingest(client, keys)
    assert client.get("/v1/export").status_code == 401
    assert _get(client, keys["ingest"], "format=csv").status_code == 403
    theirs = _get(client, keys["globex_read"], "format=csv")
    assert _rows(theirs.content) == [] and theirs.headers["x-p402-total-events"] == "0"
    bad = _get(client, keys["read"], "format=xlsx")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
