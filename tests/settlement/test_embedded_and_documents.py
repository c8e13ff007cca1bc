"""The embedded backend (an in-process EVM) anchors and verifies with no node; receipts render
as a one-page PDF and as CSV."""

from __future__ import annotations

import csv
import io
import json
import re

import pypdf
import pytest
from sqlalchemy import select
from tests.settlement.conftest import BASE_MS, event

from p402.settlement.anchoring import interval_seconds
from p402.settlement.chain import chain_from_environment
from p402.settlement.documents import CSV_COLUMNS, receipt_pdf, receipts_csv
from p402.settlement.jobs import configured_chain, seal_idle_sessions, settle
from p402.settlement.proofs import proof_bundle
from p402.settlement.receipts import get_receipt
from p402.settlement.sealing import SESSIONS, idle_seconds, seal_session
from p402.settlement.verify import verify_bundle


def test_the_embedded_backend_anchors_and_verifies_without_a_node(engine, acme):
    acme.ingest(engine, event("e1", session="s1"), event("e2", session="s2"))
    with engine.connect() as connection:
        received = connection.execute(select(SESSIONS.c.last_received_ms)).scalars().first()
    sealed = seal_idle_sessions(engine, received + 300_000)
    assert len(sealed) == 2

    chain = chain_from_environment({})  # no P402_CHAIN_RPC_URL
    assert chain.backend == "embedded"
    report = settle(engine, chain)
    assert report.final == report.formed and len(report.formed) == 1
    for receipt_id in sealed:
        with engine.connect() as connection:
            bundle = proof_bundle(connection, acme.id, receipt_id)
        assert bundle is not None
        assert bundle["anchor"]["chain_id"] == chain.chain_id
        assert [check.name for check in verify_bundle(bundle, chain.w3)][-1] == "finality"


def test_the_process_chain_is_made_once(monkeypatch):
    monkeypatch.delenv("P402_CHAIN_RPC_URL", raising=False)
    configured_chain.cache_clear()
    try:
        assert configured_chain() is configured_chain()
        assert configured_chain().backend == "embedded"
    finally:
        configured_chain.cache_clear()


def test_intervals_and_idle_time_come_from_the_environment():
    assert idle_seconds({}) == 300
    assert idle_seconds({"P402_RECEIPT_IDLE_SECONDS": "30"}) == 30
    assert interval_seconds({}) == 60
    assert interval_seconds({"P402_SETTLEMENT_INTERVAL_SECONDS": "5"}) == 5
    with pytest.raises(ValueError, match="P402_SETTLEMENT_INTERVAL_SECONDS"):
        interval_seconds({"P402_SETTLEMENT_INTERVAL_SECONDS": "soon"})
    with pytest.raises(ValueError, match="P402_RECEIPT_IDLE_SECONDS"):
        idle_seconds({"P402_RECEIPT_IDLE_SECONDS": "-1"})


def _busy_receipt(engine, tenant) -> dict[str, object]:
    """A receipt with many owners, models and policy outcomes: the most a page must hold."""
    tenant.ingest(
        engine,
        *(
            event(
                f"e{index}",
                BASE_MS + index,
                session="big",
                employee=f"employee-{index}",
                project=f"project-{index}",
                model_used=f"model-{index}",
                model_original="gpt-5" if index % 3 == 0 else None,
                policy_result="downgraded" if index % 3 == 0 else "allowed",
                policy_reason=f"dept_policy=cost-first, max_tier=economy, rule {index}",
                department="Forschung & Entwicklung — Zürich",
            )
            for index in range(40)
        ),
    )
    receipt_id = seal_session(engine, tenant.id, "big")
    assert receipt_id is not None
    with engine.connect() as connection:
        receipt = get_receipt(connection, tenant.id, receipt_id)
    assert receipt is not None
    return receipt


def test_a_receipt_is_a_valid_one_page_pdf_naming_what_it_seals(engine, acme):
    receipt = _busy_receipt(engine, acme)
    document = pypdf.PdfReader(io.BytesIO(receipt_pdf(receipt)))
    assert len(document.pages) == 1
    text = document.pages[0].extract_text()
    assert receipt["id"] in text
    assert receipt["receipt_hash"] in text
    assert "acme" in text
    assert "big" in text
    assert receipt["receipt"]["cost_usd"] in text
    assert "downgraded 14" in text
    assert "p402 verify" in text
    assert "Forschung & Entwicklung" in text
    assert document.metadata is not None
    assert receipt["id"] in (document.metadata.title or "")


def test_receipts_export_as_csv_rows(engine, acme):
    receipt = _busy_receipt(engine, acme)
    rows = list(csv.DictReader(io.StringIO(receipts_csv([receipt, receipt]))))
    assert len(rows) == 2
    assert tuple(rows[0]) == CSV_COLUMNS
    row = rows[0]
    body = receipt["receipt"]
    assert row["receipt_id"] == receipt["id"]
    assert row["events"] == "40"
    assert row["cost_usd"] == body["cost_usd"]
    assert row["employees"].split(";") == body["owners"]["employee"]
    assert row["policy_results"] == "allowed=26;downgraded=14"
    assert row["tx_hash"] == ""  # not anchored yet
    assert json.loads(json.dumps(row))  # plain strings throughout


def test_the_longest_receipt_still_fits_on_one_page(engine, acme):
    receipt = _busy_receipt(engine, acme)
    body = receipt["receipt"]
    body["tenant"] = "Acme Corporation International " * 10
    body["session"] = "s" * 200
    body["continues"] = "rcpt_" + "0" * 24
    for dimension in body["owners"]:
        body["owners"][dimension] = [f"{dimension}-{i}-with-a-long-name" for i in range(30)]
    body["routing"]["rationale"] = ["x" * 400, "y" * 400, "z" * 400]
    body["routing"]["model_changes"] = [{"from": "a" * 120, "to": "b" * 120, "events": 1}] * 6
    receipt["status"] = "anchored"
    receipt["settlement"] = {
        "batch_seq": 1,
        "leaf_index": 0,
        "tree_size": 10_000,
        "root": "aa" * 32,
        "chain_id": 42431,
        "tx_hash": "0x" + "bb" * 32,
        "block_number": 123_456_789,
        "block_hash": "0x" + "cc" * 32,
        "submitter": "0x" + "dd" * 20,
        "method": "calldata",
        "state": "final",
    }
    document = pypdf.PdfReader(io.BytesIO(receipt_pdf(receipt)))  # raises if it overflowed
    assert len(document.pages) == 1
    text = document.pages[0].extract_text()
    assert "p402 verify bundle.json" in text  # the last line is on the page
    assert re.search(r"employee-\d+-with-a-long-name and \d+ more", text)


def test_names_beyond_the_standard_fonts_lose_only_what_they_cannot_show(engine, acme):
    receipt = _busy_receipt(engine, acme)
    body = receipt["receipt"]
    body["tenant"] = "Łódź Café — “Zoë\u2019s” €"
    body["session"] = "Dvořák Nguyễn 山田"
    document = pypdf.PdfReader(io.BytesIO(receipt_pdf(receipt)))
    text = document.pages[0].extract_text()
    assert "?ódz Café — “Zoë\u2019s” €" in text  # Windows-1252 as is; Ł has no plain letter
    assert "Dvorák Nguyen ??" in text  # marks dropped where Unicode decomposes the letter
