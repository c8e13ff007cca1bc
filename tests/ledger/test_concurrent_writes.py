"""Writers that meet: reports of one call arriving at once, one report delivered twice at
once, and a tenant's lists (negotiated rates, webhooks, import mapping) replaced at once.
The ledger stays as one writer would leave it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from p402.ledger.events import EventFilter, EventRecord, insert_events, spend
from p402.ledger.imports import MappingRule, replace_mapping
from p402.ledger.keys import Role, create_key
from p402.ledger.price_overrides import PriceOverrideSpec, replace_price_overrides
from p402.ledger.webhooks import WebhookSpec, set_webhooks

TS = 1_795_000_000_000


def _report(call: int, source: str, employee: str = "alice") -> EventRecord:
    return EventRecord(
        event_id=f"{source}-{call}",
        ts_ms=TS + call,
        usage_evidence="provider_response",
        cost_evidence="computed",
        privacy_mode="metadata_only",
        provider="openai",
        model_used="gpt-5-mini",
        input_tokens=100,
        output_tokens=10,
        cost_picos=1_000_000 + call,
        department="legal",
        employee=employee if source == "p402" else None,
        source=source,
        response_key=f"openai:resp-{call}",
    )


def _tenant(engine: Engine, name: str = "acme") -> int:
    identity, _ = create_key(engine, tenant=name, role=Role.INGEST)
    return identity.tenant_id


def _at_once(*calls: Callable[[], object]) -> None:
    """Run ``calls`` on threads of their own, released together; re-raise what they raise."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        start.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for future in [pool.submit(run, call) for call in calls]:
            future.result()


def _rows_per_call(engine: Engine, tenant_id: int) -> dict[str, list[str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT response_key, source FROM economic_event WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).all()
    calls: dict[str, list[str]] = {}
    for key, source in rows:
        calls.setdefault(key, []).append(source)
    return calls


def _assert_rollups_match_the_events(engine: Engine, tenant_id: int) -> None:
    with engine.connect() as connection:
        for group_by in ([], ["employee"], ["department", "employee"], ["project"]):
            rolled, rolled_total = spend(connection, tenant_id, EventFilter(), group_by)
            raw, raw_total = spend(
                connection, tenant_id, EventFilter(), group_by, from_rollups=False
            )
            assert rolled_total == raw_total, group_by
            assert sorted(map(str, rolled)) == sorted(map(str, raw)), group_by


def test_one_call_reported_at_once_by_p402_and_another_instrumentation_is_one_event(engine):
    tenant_id = _tenant(engine)
    calls = range(40)
    for call in calls:  # each pair of reports sent together, as by two replicas
        _at_once(
            lambda call=call: insert_events(engine, tenant_id, [_report(call, "p402")]),
            lambda call=call: insert_events(engine, tenant_id, [_report(call, "genai")]),
        )
    assert _rows_per_call(engine, tenant_id) == {f"openai:resp-{c}": ["p402"] for c in calls}
    _assert_rollups_match_the_events(engine, tenant_id)


def test_a_report_delivered_twice_at_once_replaces_the_other_instrumentations_once(
    engine, database_url
):
    tenant_id = _tenant(engine)
    calls = range(12)
    insert_events(engine, tenant_id, [_report(call, "genai") for call in calls])
    own = [_report(call, "p402") for call in calls]
    # Both deliveries are held up in the middle of their transactions (at the rollups, whose
    # rows another transaction holds) until both have looked for the reports to replace.
    with engine.connect() as blocker:
        if engine.dialect.name == "postgresql":
            blocker.execute(
                text("SELECT 1 FROM spend_rollup WHERE tenant_id = :t FOR UPDATE"),
                {"t": tenant_id},
            )
            commit = blocker.commit
        else:  # SQLite: the database's write lock
            driver = blocker.connection.driver_connection
            driver.execute("BEGIN IMMEDIATE")
            commit = driver.commit

        def release() -> None:
            time.sleep(0.5)
            commit()

        _at_once(
            lambda: insert_events(engine, tenant_id, own),
            lambda: insert_events(engine, tenant_id, own),
            release,
        )
    assert _rows_per_call(engine, tenant_id) == {f"openai:resp-{c}": ["p402"] for c in calls}
    _assert_rollups_match_the_events(engine, tenant_id)
    with engine.connect() as connection:
        negative = connection.execute(
            text("SELECT count(*) FROM spend_rollup WHERE cost_picos < 0 OR events < 0")
        ).scalar_one()
    assert negative == 0


def test_lists_replaced_at_once_are_the_last_replacement_not_a_mix(engine):
    tenant_id = _tenant(engine)

    def overrides(n: int) -> Callable[[], None]:
        spec = PriceOverrideSpec(model=f"model-{n}*", input_per_mtok="1", output_per_mtok="2")

        def replace() -> None:
            with engine.begin() as connection:
                replace_price_overrides(connection, tenant_id, [spec])

        return replace

    def webhooks(n: int) -> Callable[[], None]:
        def replace() -> None:
            with engine.begin() as connection:
                set_webhooks(connection, tenant_id, [WebhookSpec(f"https://hooks.example/{n}")], 0)

        return replace

    def mapping(n: int) -> Callable[[], None]:
        rule = MappingRule("openai", "project_id", f"proj_{n}", department="legal")
        return lambda: replace_mapping(engine, tenant_id, [rule])

    _at_once(*(overrides(n % 4) for n in range(12)))
    _at_once(*(webhooks(n % 4) for n in range(12)))
    _at_once(*(mapping(n % 4) for n in range(12)))
    with engine.connect() as connection:
        kept_overrides = connection.execute(
            text("SELECT count(*) FROM price_override WHERE tenant_id = :t"), {"t": tenant_id}
        ).scalar_one()
        kept_webhooks = connection.execute(
            text("SELECT count(*) FROM webhook WHERE tenant_id = :t AND removed_ms IS NULL"),
            {"t": tenant_id},
        ).scalar_one()
        kept_rules = connection.execute(
            text("SELECT count(*) FROM import_mapping WHERE tenant_id = :t"), {"t": tenant_id}
        ).scalar_one()
    assert (kept_overrides, kept_webhooks, kept_rules) == (1, 1, 1)
