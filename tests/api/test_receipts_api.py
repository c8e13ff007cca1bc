"""Receipt routes: closing a session, listing and reading receipts as JSON, PDF and CSV, the
proof bundle once anchored (embedded chain), settlements, roles and tenant isolation."""

from __future__ import annotations

import csv
import io
import json

import pypdf
import pytest

from p402.settlement.anchoring import settle
from p402.settlement.chain import embedded_chain
from p402.settlement.verify import verify_bundle

EVENTS = [
    {
        "id": f"evt-{index}",
        "timestamp": f"2026-11-20T09:3{index}:00Z",
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 200,
        "department": "legal",
        "employee": "alice",
        "session": "contract-42",
    }
    for index in range(3)
] + [
    {
        "id": "evt-bob",
        "timestamp": "2026-11-21T10:00:00Z",
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini",
        "input_tokens": 10,
        "output_tokens": 2,
        "department": "finance",
        "employee": "bob",
        "session": "close-nov",
    }
]


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"x-p402-api-key": key, **extra}


def _ingest(client, key, events=EVENTS) -> None:
    response = client.post(
        "/v1/events",
        content=json.dumps(events),
        headers=_headers(key, **{"content-type": "application/json"}),
    )
    assert response.status_code == 200, response.text


def _close(client, key, session):
    return client.post(f"/v1/sessions/{session}/close", headers=_headers(key))


@pytest.fixture
def sealed(client, keys) -> dict[str, str]:
    """Two sessions of acme closed into receipts: session name → receipt id."""
    _ingest(client, keys["ingest"])
    receipts = {}
    for session in ("contract-42", "close-nov"):
        response = _close(client, keys["ingest"], session)
        assert response.status_code == 200, response.text
        receipts[session] = response.json()["id"]
    return receipts


def test_closing_a_session_answers_its_sealed_receipt_and_is_idempotent(client, keys):
    _ingest(client, keys["ingest"])
    response = _close(client, keys["ingest"], "contract-42")
    assert response.status_code == 200
    receipt = response.json()
    assert receipt["status"] == "sealed"
    assert receipt["receipt"]["session"] == "contract-42"
    assert receipt["receipt"]["sealed_by"] == "close"
    assert receipt["receipt"]["events"]["count"] == 3
    assert receipt["receipt"]["cost_usd"] == "0.00195"
    assert len(receipt["receipt_hash"]) == 64
    again = _close(client, keys["admin"], "contract-42")
    assert again.status_code == 200
    assert again.json()["id"] == receipt["id"]

    events = client.get("/v1/events?session=contract-42", headers=_headers(keys["read"])).json()
    assert {(e["receipt_id"], e["evidence_status"]) for e in events["data"]} == {
        (receipt["id"], "sealed")
    }


def test_closing_needs_an_ingest_or_admin_key_and_the_tenants_own_session(client, keys):
    _ingest(client, keys["ingest"])
    assert _close(client, keys["read"], "contract-42").status_code == 403
    refused = _close(client, keys["globex_ingest"], "contract-42")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert client.post("/v1/sessions/contract-42/close").status_code == 401


def test_receipts_are_listed_newest_first_with_filters_and_cursor(client, keys, sealed):
    read = _headers(keys["read"])
    everything = client.get("/v1/receipts", headers=read).json()
    assert {r["id"] for r in everything["data"]} == set(sealed.values())
    assert everything["next_cursor"] is None

    by_session = client.get("/v1/receipts?session=close-nov", headers=read).json()["data"]
    assert [r["id"] for r in by_session] == [sealed["close-nov"]]
    by_employee = client.get("/v1/receipts?employee=alice", headers=read).json()["data"]
    assert [r["id"] for r in by_employee] == [sealed["contract-42"]]
    by_department = client.get("/v1/receipts?department=finance", headers=read).json()["data"]
    assert [r["id"] for r in by_department] == [sealed["close-nov"]]
    in_time = client.get(
        "/v1/receipts?from=2026-11-21T00:00:00Z&to=2026-11-22T00:00:00Z", headers=read
    ).json()["data"]
    assert [r["id"] for r in in_time] == [sealed["close-nov"]]

    first = client.get("/v1/receipts?limit=1", headers=read).json()
    assert len(first["data"]) == 1 and first["next_cursor"]
    second = client.get(f"/v1/receipts?limit=1&cursor={first['next_cursor']}", headers=read)
    assert second.json()["next_cursor"] is None
    assert {first["data"][0]["id"], second.json()["data"][0]["id"]} == set(sealed.values())

    assert client.get("/v1/receipts?cursor=nonsense", headers=read).status_code == 400
    assert client.get("/v1/receipts", headers=_headers(keys["globex_read"])).json()["data"] == []
    assert client.get("/v1/receipts", headers=_headers(keys["ingest"])).status_code == 403


def test_a_receipt_reads_as_json_pdf_and_csv(client, keys, sealed):
    receipt_id = sealed["contract-42"]
    read = _headers(keys["read"])
    shown = client.get(f"/v1/receipts/{receipt_id}", headers=read)
    assert shown.status_code == 200
    assert shown.headers["content-type"].startswith("application/json")
    assert shown.json()["receipt"]["receipt_id"] == receipt_id

    for path, headers in (
        (f"/v1/receipts/{receipt_id}.pdf", read),
        (f"/v1/receipts/{receipt_id}", {**read, "accept": "application/pdf"}),
    ):
        pdf = client.get(path, headers=headers)
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        document = pypdf.PdfReader(io.BytesIO(pdf.content))
        assert len(document.pages) == 1
        assert receipt_id in document.pages[0].extract_text()

    for path, headers in (
        (f"/v1/receipts/{receipt_id}.csv", read),
        (f"/v1/receipts/{receipt_id}", {**read, "accept": "text/csv"}),
    ):
        response = client.get(path, headers=headers)
        assert response.headers["content-type"].startswith("text/csv")
        [row] = list(csv.DictReader(io.StringIO(response.text)))
        assert row["receipt_id"] == receipt_id
        assert row["session"] == "contract-42"
        assert row["cost_usd"] == "0.00195"
        assert row["receipt_hash"] == shown.json()["receipt_hash"]

    listed = client.get("/v1/receipts", headers={**read, "accept": "text/csv"})
    assert {row["receipt_id"] for row in csv.DictReader(io.StringIO(listed.text))} == set(
        sealed.values()
    )

    for suffix in ("", ".pdf", ".csv", "/proof"):
        other = client.get(
            f"/v1/receipts/{receipt_id}{suffix}", headers=_headers(keys["globex_read"])
        )
        assert other.status_code == 404, suffix
        assert other.json()["error"]["code"] == "not_found"
    assert client.get("/v1/receipts/rcpt_unknown", headers=read).status_code == 404


def test_the_proof_bundle_appears_once_anchored_and_verifies(client, keys, sealed, engine):
    receipt_id = sealed["contract-42"]
    read = _headers(keys["read"])
    early = client.get(f"/v1/receipts/{receipt_id}/proof", headers=read)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "not_anchored"

    def session_log_status() -> str:
        log = client.get("/v1/sessions", headers=read).json()["data"]
        (row,) = [row for row in log if row["session"] == "contract-42"]
        assert row["receipt_id"] == receipt_id
        return str(row["receipt_status"])

    assert session_log_status() == "sealed"
    chain = embedded_chain()
    report = settle(engine, chain)
    assert report.final == report.formed and len(report.formed) == 1

    bundle = client.get(f"/v1/receipts/{receipt_id}/proof", headers=read).json()
    assert set(bundle) == {
        "receipt",
        "receipt_hash",
        "leaf_index",
        "tree_size",
        "audit_path",
        "root",
        "batch_seq",
        "anchor",
    }
    assert set(bundle["anchor"]) == {
        "chain_id",
        "tx_hash",
        "block_number",
        "block_hash",
        "submitter",
        "method",
    }
    assert bundle["tree_size"] == 2
    assert bundle["batch_seq"] == 1
    assert bundle["anchor"]["submitter"] == chain.submitter
    assert [check.name for check in verify_bundle(bundle, chain.w3)][-1] == "finality"

    shown = client.get(f"/v1/receipts/{receipt_id}", headers=read).json()
    assert shown["status"] == "anchored"
    assert shown["receipt_hash"] == bundle["receipt_hash"]  # anchoring changed no hash
    assert shown["settlement"]["tx_hash"] == bundle["anchor"]["tx_hash"]
    events = client.get("/v1/events?session=contract-42", headers=read).json()["data"]
    assert {event["evidence_status"] for event in events} == {"anchored"}
    assert session_log_status() == "anchored"
    pdf = client.get(f"/v1/receipts/{receipt_id}.pdf", headers=read)
    text = pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert bundle["anchor"]["tx_hash"] in text

    batches = client.get("/v1/settlements", headers=read).json()
    [batch] = batches["data"]
    assert batch["state"] == "final"
    assert (batch["size"], batch["root"]) == (2, bundle["root"])
    assert batch["tx_hash"] == bundle["anchor"]["tx_hash"]
    assert batch["block_number"] == bundle["anchor"]["block_number"]
    assert client.get("/v1/settlements?state=final", headers=read).json()["data"] == [batch]
    assert client.get("/v1/settlements?state=signed", headers=read).json()["data"] == []
    assert client.get("/v1/settlements", headers=_headers(keys["globex_read"])).json()["data"] == []
