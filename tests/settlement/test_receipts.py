"""Sealing sessions into receipts (on idle, on close, continuations), the per-tenant hash
chain, and the immutability of sealed receipts, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from tests.settlement.conftest import BASE_MS, event

from p402.ledger.events import EVENTS
from p402.settlement.canonical import canonical_bytes
from p402.settlement.merkle import tree_hash
from p402.settlement.receipts import (
    RECEIPT_LEAVES,
    RECEIPTS,
    SealedReceiptError,
    get_receipt,
)
from p402.settlement.sealing import SESSIONS, close_session, seal_idle, seal_session

IDLE_MS = 300_000


def _last_received(engine, tenant_id: int, session: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(SESSIONS.c.last_received_ms).where(
                SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.name == session
            )
        ).scalar_one()


def _receipt_rows(engine, tenant_id: int):
    with engine.connect() as connection:
        return (
            connection.execute(
                select(RECEIPTS).where(RECEIPTS.c.tenant_id == tenant_id).order_by(RECEIPTS.c.seq)
            )
            .mappings()
            .all()
        )


def _events(engine, tenant_id: int):
    with engine.connect() as connection:
        return {
            row.event_id: (row.receipt_id, row.evidence_status)
            for row in connection.execute(
                select(EVENTS.c.event_id, EVENTS.c.receipt_id, EVENTS.c.evidence_status).where(
                    EVENTS.c.tenant_id == tenant_id
                )
            )
        }


def test_a_session_is_sealed_once_idle_and_not_before(engine, acme):
    acme.ingest(
        engine,
        event("e1", BASE_MS, session="s1"),
        event("e2", BASE_MS + 5_000, session="s1", model_used="claude-sonnet-4-5"),
        event("e3", BASE_MS + 9_000, session="s1", project="phoenix"),
    )
    received = _last_received(engine, acme.id, "s1")

    assert seal_idle(engine, now_ms=received + IDLE_MS - 1) == []
    assert set(_events(engine, acme.id).values()) == {(None, "pending")}

    [receipt_id] = seal_idle(engine, now_ms=received + IDLE_MS)
    assert _events(engine, acme.id) == {e: (receipt_id, "sealed") for e in ("e1", "e2", "e3")}
    with engine.connect() as connection:
        shown = get_receipt(connection, acme.id, receipt_id)
        session_receipt = connection.execute(
            select(SESSIONS.c.receipt_id).where(SESSIONS.c.name == "s1")
        ).scalar_one()
    assert session_receipt == receipt_id
    assert shown is not None
    assert shown["status"] == "sealed"
    assert shown["settlement"] is None
    body = shown["receipt"]
    assert body["receipt_id"] == receipt_id
    assert body["tenant"] == "acme"
    assert body["session"] == "s1"
    assert body["sealed_by"] == "idle"
    assert body["period"] == {"from": "2026-11-18T11:06:40.000Z", "to": "2026-11-18T11:06:49.000Z"}
    assert body["owners"]["employee"] == ["alice"]
    assert body["owners"]["project"] == ["phoenix"]
    assert body["models"] == ["claude-sonnet-4-5", "gpt-5-mini"]
    assert body["events"]["count"] == 3
    assert body["tokens"]["input"] == 300
    assert body["tokens"]["output"] == 60
    assert body["tokens"]["reasoning"] is None  # not measured: null, never 0
    assert body["cost_usd"] == "0.00000375"
    assert body["policy_results"] == {"allowed": 3}
    assert body["privacy_mode"] == "metadata_only"
    # Nothing more to seal: a second run makes no receipt.
    assert seal_idle(engine, now_ms=received + 10 * IDLE_MS) == []


def test_the_idle_time_comes_from_the_environment(engine, acme, monkeypatch):
    monkeypatch.setenv("P402_RECEIPT_IDLE_SECONDS", "60")
    acme.ingest(engine, event("e1", session="s1"))
    received = _last_received(engine, acme.id, "s1")
    assert seal_idle(engine, now_ms=received + 59_999) == []
    assert len(seal_idle(engine, now_ms=received + 60_000)) == 1


def test_the_receipt_hash_is_the_sha256_of_its_canonical_bytes_and_leaves_are_kept(engine, acme):
    acme.ingest(engine, event("e1", session="s1"), event("e2", BASE_MS + 1, session="s1"))
    [receipt_id] = seal_session_now(engine, acme.id, "s1")
    [row] = _receipt_rows(engine, acme.id)
    body = json.loads(row["body"])
    assert row["body"].encode() == canonical_bytes(body)
    assert row["receipt_hash"] == hashlib.sha256(row["body"].encode()).hexdigest()
    with engine.connect() as connection:
        leaves = connection.execute(
            select(RECEIPT_LEAVES)
            .where(RECEIPT_LEAVES.c.receipt_id == receipt_id)
            .order_by(RECEIPT_LEAVES.c.leaf_index)
        ).all()
    assert [leaf.event_id for leaf in leaves] == ["e1", "e2"]
    for leaf in leaves:
        assert leaf.leaf_hash == hashlib.sha256(leaf.body.encode()).hexdigest()
        assert json.loads(leaf.body)["id"] == leaf.event_id
    events_root = tree_hash([bytes.fromhex(leaf.leaf_hash) for leaf in leaves]).hex()
    assert body["events"]["root"] == events_root


def seal_session_now(engine, tenant_id: int, session: str) -> list[str]:
    receipt_id = seal_session(engine, tenant_id, session)
    return [] if receipt_id is None else [receipt_id]


def test_receipts_form_a_hash_chain_per_tenant(engine, acme, globex):
    acme.ingest(engine, event("a1", session="s1"), event("a2", session="s2"))
    globex.ingest(engine, event("g1", session="s1"))
    for session in ("s1", "s2"):
        seal_session(engine, acme.id, session)
    seal_session(engine, globex.id, "s1")

    first, second = _receipt_rows(engine, acme.id)
    assert (first["seq"], first["previous_hash"]) == (1, None)
    assert (second["seq"], second["previous_hash"]) == (2, first["receipt_hash"])
    assert json.loads(second["body"])["previous_receipt_hash"] == first["receipt_hash"]
    assert json.loads(second["body"])["sequence"] == 2
    [theirs] = _receipt_rows(engine, globex.id)
    assert (theirs["seq"], theirs["previous_hash"]) == (1, None)


def test_events_after_the_seal_start_a_continuation_receipt(engine, acme):
    acme.ingest(engine, event("e1", session="s1"))
    first_id = seal_session(engine, acme.id, "s1")
    [before] = _receipt_rows(engine, acme.id)

    acme.ingest(engine, event("e2", BASE_MS + 60_000, session="s1"))
    received = _last_received(engine, acme.id, "s1")
    [second_id] = seal_idle(engine, now_ms=received + IDLE_MS)

    first, second = _receipt_rows(engine, acme.id)
    assert dict(first) == dict(before)  # the sealed receipt did not change
    body = json.loads(second["body"])
    assert (body["session"], body["part"], body["continues"]) == ("s1", 2, first_id)
    assert body["events"]["count"] == 1
    assert _events(engine, acme.id) == {"e1": (first_id, "sealed"), "e2": (second_id, "sealed")}


def test_closing_a_session_seals_it_now_and_again_changes_nothing(engine, acme, globex):
    acme.ingest(engine, event("e1", session="s1"))
    receipt_id = close_session(engine, acme.id, "s1")
    assert receipt_id is not None
    assert json.loads(_receipt_rows(engine, acme.id)[0]["body"])["sealed_by"] == "close"
    assert close_session(engine, acme.id, "s1") == receipt_id
    assert len(_receipt_rows(engine, acme.id)) == 1
    with engine.connect() as connection:
        closed = connection.execute(
            select(SESSIONS.c.closed_ms).where(SESSIONS.c.name == "s1")
        ).scalar_one()
    assert closed is not None

    assert close_session(engine, acme.id, "no-such-session") is None
    assert close_session(engine, globex.id, "s1") is None  # another tenant's session

    acme.ingest(engine, event("e2", BASE_MS + 1, session="s1"))
    continuation = close_session(engine, acme.id, "s1")
    assert continuation not in (None, receipt_id)
    assert len(_receipt_rows(engine, acme.id)) == 2


def test_events_without_a_session_are_sealed_per_day(engine, acme):
    day = 86_400_000
    acme.ingest(
        engine,
        event("d1a", BASE_MS),
        event("d1b", BASE_MS + 1_000),
        event("d2a", BASE_MS + day),
    )
    with engine.connect() as connection:
        received = connection.execute(select(EVENTS.c.received_ms)).scalars().first()
    assert seal_idle(engine, now_ms=received) == []
    sealed = seal_idle(engine, now_ms=received + IDLE_MS)
    assert len(sealed) == 2
    bodies = [json.loads(row["body"]) for row in _receipt_rows(engine, acme.id)]
    assert sorted(body["events"]["count"] for body in bodies) == [1, 2]
    assert all(body["session"] is None for body in bodies)


def test_unmeasured_usage_and_unpriced_cost_stay_null(engine, acme):
    acme.ingest(
        engine,
        event(
            "e1",
            session="s1",
            input_tokens=None,
            output_tokens=None,
            cost_picos=None,
            cost_evidence="unpriced",
            usage_evidence="missing",
        ),
    )
    seal_session(engine, acme.id, "s1")
    body = json.loads(_receipt_rows(engine, acme.id)[0]["body"])
    assert body["tokens"]["input"] is None
    assert body["cost_usd"] is None
    assert body["events"]["unpriced"] == 1
    assert body["events"]["without_usage"] == 1


def test_concurrent_sealers_seal_each_event_once(engine, acme):
    acme.ingest(engine, *(event(f"e{i}", BASE_MS + i, session="s1") for i in range(20)))
    results: list[str | None] = []
    errors: list[BaseException] = []

    def seal() -> None:
        try:
            results.append(seal_session(engine, acme.id, "s1"))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=seal) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len([r for r in results if r is not None]) == 1
    [row] = _receipt_rows(engine, acme.id)
    assert row["events"] == 20
    assert {receipt for receipt, _ in _events(engine, acme.id).values()} == {row["id"]}


def test_sessions_closed_at_once_are_each_sealed_and_closed_on_one_chain(engine, acme):
    sessions = [f"s{n}" for n in range(24)]
    for session in sessions:
        acme.ingest(
            engine, *(event(f"{session}-e{i}", BASE_MS + i, session=session) for i in range(3))
        )
    with ThreadPoolExecutor(max_workers=8) as pool:  # every close races the others' chain
        closed = list(pool.map(lambda session: close_session(engine, acme.id, session), sessions))
    rows = _receipt_rows(engine, acme.id)
    assert sorted(closed) == sorted(row["id"] for row in rows)
    assert sorted(row["seq"] for row in rows) == list(range(1, len(sessions) + 1))
    with engine.connect() as connection:
        states = connection.execute(
            select(SESSIONS.c.name, SESSIONS.c.receipt_id, SESSIONS.c.closed_ms).where(
                SESSIONS.c.tenant_id == acme.id
            )
        ).all()
    assert {name for name, receipt, closed_ms in states if receipt and closed_ms} == set(sessions)
    for row in rows:
        assert json.loads(row["body"])["sealed_by"] == "close"


def test_a_session_that_cannot_be_sealed_leaves_the_others_to_be_sealed(engine, acme, caplog):
    # A token count beyond the integers RFC 8785 JSON carries exactly: its receipt cannot
    # be written, but the sessions after it in the job's order still are.
    acme.ingest(engine, event("big", session="a-big", input_tokens=2**53))
    acme.ingest(engine, event("small", session="b-small"))
    sealed = seal_idle(engine, now_ms=BASE_MS + 10**9, idle_ms=0)
    [row] = _receipt_rows(engine, acme.id)
    assert sealed == [row["id"]] and row["session"] == "b-small"
    assert _events(engine, acme.id)["big"] == (None, "pending")
    assert "session 'a-big' cannot be sealed" in caplog.text


def test_the_ledger_refuses_to_update_a_sealed_receipt(engine, acme):
    acme.ingest(engine, event("e1", session="s1"))
    receipt_id = seal_session(engine, acme.id, "s1")
    for table, column in ((RECEIPTS, "body"), (RECEIPT_LEAVES, "body")):
        key = RECEIPTS.c.id if table is RECEIPTS else RECEIPT_LEAVES.c.receipt_id
        with pytest.raises(SealedReceiptError), engine.begin() as connection:
            connection.execute(update(table).where(key == receipt_id).values({column: "{}"}))
    # Below the application, the database itself refuses (a trigger on both databases).
    with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
        connection.exec_driver_sql("UPDATE receipt SET body = '{}'")
    [row] = _receipt_rows(engine, acme.id)
    assert json.loads(row["body"])["receipt_id"] == receipt_id


def test_postgresql_refuses_to_delete_a_sealed_receipt_except_when_erasing(engine, acme):
    if engine.dialect.name != "postgresql":
        pytest.skip("the DELETE guard is PostgreSQL's (SQLite's trigger refuses UPDATE)")
    acme.ingest(engine, event("e1", session="s1"))
    seal_session(engine, acme.id, "s1")
    for statement in ("DELETE FROM receipt_leaf", "TRUNCATE receipt_leaf CASCADE"):
        with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
            connection.exec_driver_sql(statement)
    with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
        connection.execute(delete(RECEIPT_LEAVES))
    assert len(_receipt_rows(engine, acme.id)) == 1

    with engine.begin() as connection:  # tenant data deletion
        connection.execute(text("SET LOCAL p402.erasing = 'on'"))
        connection.execute(delete(RECEIPT_LEAVES).where(RECEIPT_LEAVES.c.tenant_id == acme.id))
        connection.execute(delete(RECEIPTS).where(RECEIPTS.c.tenant_id == acme.id))
    assert _receipt_rows(engine, acme.id) == []

    acme.ingest(engine, event("e2", session="s2"))
    seal_session(engine, acme.id, "s2")
    with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
        connection.exec_driver_sql(
            "DELETE FROM receipt_leaf"
        )  # the setting ended with its transaction
    assert len(_receipt_rows(engine, acme.id)) == 1


def test_erasing_a_tenant_removes_its_sealed_receipts_and_batches(engine, acme, globex):
    from p402.ledger.erasure import erase_tenant
    from p402.settlement.anchoring import form_batches

    for tenant in (acme, globex):
        tenant.ingest(engine, event("e1", session="s1"))
        seal_session(engine, tenant.id, "s1")
    form_batches(engine)

    erase_tenant(engine, acme.id)
    assert _receipt_rows(engine, acme.id) == []
    with engine.connect() as connection:
        left = connection.execute(
            text(
                "SELECT tenant_id FROM settlement_leaf UNION ALL SELECT tenant_id FROM receipt_leaf"
            )
        ).scalars()
        assert set(left) == {globex.id}
    assert len(_receipt_rows(engine, globex.id)) == 1  # other tenants' receipts are untouched
