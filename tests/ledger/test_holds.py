"""Strict enforcement in the ledger: authorisations decide and hold a call's bound, ingest
releases the hold, holds expire, and concurrent calls never hold more than a cap."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from p402.instrumentation.vocabulary import PolicyDecision, PolicyResult
from p402.ledger.budgets import BudgetSpec, budget_states, put_budgets
from p402.ledger.clock import from_iso
from p402.ledger.database import connect, migrate, reservation_engine
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.holds import HOLD_TTL_MS, CallToAuthorize, WouldWait, authorize
from p402.ledger.keys import Role, create_key
from p402.ledger.policies import PolicySpec, put_policies, put_tier_overrides
from p402.ledger.price_overrides import add_price_override

USD = 10**12
NOW = from_iso("2026-11-20T12:00:00Z")


def _setup(engine, *budgets: dict[str, object], policies: tuple[dict[str, object], ...] = ()):
    identity, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    with engine.begin() as connection:
        put_budgets(connection, identity.tenant_id, [BudgetSpec.from_json(b) for b in budgets], NOW)
        put_policies(
            connection, identity.tenant_id, [PolicySpec.from_json(p) for p in policies], NOW
        )
    return identity.tenant_id


def _call(event_id: str, model: str = "gpt-5", cost: int = 1 * USD, **owners: str):
    return CallToAuthorize(
        event_id=event_id,
        model=model,
        provider="openai",
        owners={"department": "legal", "project": "phoenix", **owners},
        max_cost_picos=cost,
    )


def _held(engine, tenant_id: int, now: int = NOW) -> int:
    with engine.connect() as connection:
        (state,) = budget_states(connection, tenant_id, now)
    return state.held_picos


def _hold_count(engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT COUNT(*) FROM budget_hold")).scalar_one())


def test_an_allowed_call_holds_its_bound_until_its_event_is_ingested(engine):
    tenant = _setup(engine, {"scope": "project", "name": "phoenix", "cap_usd": "3"})
    answer = authorize(engine, tenant, _call("e1", cost=2 * USD), NOW)
    assert (answer.decision, answer.result, answer.model) == (
        PolicyDecision.ALLOW,
        PolicyResult.ALLOWED,
        "gpt-5",
    )
    assert (answer.hold_picos, answer.expires_ms) == (2 * USD, NOW + HOLD_TTL_MS)
    assert _held(engine, tenant) == 2 * USD
    # Asking again for the same event answers the same hold.
    assert authorize(engine, tenant, _call("e1", cost=2 * USD), NOW).hold_picos == 2 * USD
    assert _hold_count(engine) == 1
    # The hold leaves 1 USD: a second call of 2 USD passes the cap, and the default action,
    # notify, lets it through flagged.
    flagged = authorize(engine, tenant, _call("e2", cost=2 * USD), NOW)
    assert (flagged.decision, flagged.result) == (PolicyDecision.ALLOW, PolicyResult.FLAGGED)
    assert flagged.reason == "budget project=phoenix month at cap (action_at_cap=notify)"

    insert_events(
        engine,
        tenant,
        [
            EventRecord(
                event_id="e1",
                ts_ms=NOW,
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                cost_picos=USD // 2,
                project="phoenix",
            )
        ],
    )
    with engine.connect() as connection:
        (state,) = budget_states(connection, tenant, NOW)
        events = connection.execute(text("SELECT event_id FROM budget_hold")).scalars().all()
    assert events == ["e2"]
    assert (state.spent_picos, state.held_picos) == (USD // 2, 2 * USD)


def test_a_call_past_a_blocking_cap_is_blocked_and_holds_nothing(engine):
    tenant = _setup(
        engine,
        {"scope": "department", "name": "legal", "cap_usd": "1.5", "action_at_cap": "block"},
    )
    assert authorize(engine, tenant, _call("e1"), NOW).decision is PolicyDecision.ALLOW
    answer = authorize(engine, tenant, _call("e2"), NOW)
    assert (answer.decision, answer.result) == (PolicyDecision.BLOCK, PolicyResult.BLOCKED)
    assert answer.reason == "budget department=legal month at cap (action_at_cap=block)"
    assert answer.hold_picos is None
    assert _hold_count(engine) == 1
    # Another department's call is not covered by the legal budget.
    other = authorize(engine, tenant, _call("e3", department="sales"), NOW)
    assert other.decision is PolicyDecision.ALLOW


def test_a_downgrade_cap_switches_to_the_downgrade_model_priced_on_the_token_bounds(engine):
    tenant = _setup(
        engine,
        {
            "scope": "project",
            "name": "phoenix",
            "cap_usd": "0.01",
            "action_at_cap": "downgrade",
            "downgrade_model": "gpt-5-mini",
        },
    )
    call = CallToAuthorize(
        event_id="e1",
        model="gpt-5",
        provider="openai",
        owners={"project": "phoenix"},
        max_input_tokens=10_000,
        max_output_tokens=1_000,
    )
    # gpt-5: 10k x 1.25 + 1k x 10 USD/M = 0.0225 > 0.01; gpt-5-mini: 0.0025 + 0.002 = 0.0045.
    answer = authorize(engine, tenant, call, NOW)
    assert (answer.decision, answer.result, answer.model) == (
        PolicyDecision.DOWNGRADE,
        PolicyResult.DOWNGRADED,
        "gpt-5-mini",
    )
    assert answer.hold_picos == 4_500_000_000
    assert answer.reason == (
        "budget project=phoenix month at cap (action_at_cap=downgrade), downgrade_model=gpt-5-mini"
    )
    # Past the cap (0.0135 held after three), calls go on with gpt-5-mini, each one held.
    for event_id in ("e2", "e3"):
        later = authorize(
            engine, tenant, CallToAuthorize(**{**vars_of(call), "event_id": event_id}), NOW
        )
        assert (later.decision, later.model) == (PolicyDecision.DOWNGRADE, "gpt-5-mini")
        assert later.hold_picos == 4_500_000_000


def test_a_bound_on_token_counts_is_priced_at_the_tenants_negotiated_rates(engine):
    tenant = _setup(engine, {"scope": "project", "name": "phoenix", "cap_usd": "100"})
    other = create_key(engine, tenant="globex", role=Role.INGEST)[0].tenant_id
    with engine.begin() as connection:
        cap = BudgetSpec.from_json({"scope": "project", "name": "phoenix", "cap_usd": "100"})
        put_budgets(connection, other, [cap], NOW)
    # An older rate for every provider, and a newer one for openai only: the newer applies.
    add_price_override(
        engine, tenant, model="gpt-5*", input_per_mtok="9", output_per_mtok="9", valid_to_ms=NOW
    )
    add_price_override(engine, tenant, model="gpt-5*", input_per_mtok="1", output_per_mtok="2")
    add_price_override(
        engine, tenant, model="gpt-5*", input_per_mtok="0.5", output_per_mtok="1", provider="openai"
    )

    def hold(tenant_id: int, event_id: str, max_cost: int | None = None) -> int | None:
        call = CallToAuthorize(
            event_id=event_id,
            model="gpt-5",
            provider="openai",
            owners={"project": "phoenix"},
            max_cost_picos=max_cost,
            max_input_tokens=100_000,
            max_output_tokens=10_000,
        )
        return authorize(engine, tenant_id, call, NOW).hold_picos

    # 100k x 0.5 + 10k x 1 USD/M = 0.06 USD; the public price would be 0.225 USD.
    assert hold(tenant, "e1") == 60_000_000_000
    assert hold(other, "e1") == 225_000_000_000  # another tenant's rates are not its own
    # The caller's own bound counts when it is the larger.
    assert hold(tenant, "e2", max_cost=USD // 10) == USD // 10


def test_a_bound_larger_than_the_largest_hold_is_blocked(engine):
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "100"})
    rate = "1000000000000"  # USD per million tokens, a rate no call can be reserved at
    add_price_override(engine, tenant, model="gpt-5", input_per_mtok=rate, output_per_mtok=rate)
    call = CallToAuthorize(
        "e1", "gpt-5", "openai", {"project": "phoenix"}, max_input_tokens=10, max_output_tokens=10
    )
    answer = authorize(engine, tenant, call, NOW)
    assert (answer.decision, answer.hold_picos) == (PolicyDecision.BLOCK, None)
    assert answer.reason == "the call's bound is more than the largest hold (1000000 USD)"
    assert _hold_count(engine) == 0


def vars_of(call: CallToAuthorize) -> dict[str, object]:
    return {name: getattr(call, name) for name in call.__dataclass_fields__}


def test_department_tier_policy_downgrades_above_the_ceiling_and_blocks_below_the_floor(engine):
    tenant = _setup(
        engine,
        policies=({"department": "legal", "min_model": "claude-sonnet-4-5", "max_model": "gpt-5"},),
    )
    above = authorize(engine, tenant, _call("e1", model="o3-pro"), NOW)
    assert (above.decision, above.model) == (PolicyDecision.DOWNGRADE, "gpt-5")
    assert above.reason == "dept_policy=quality-first, max_tier=standard"
    below = authorize(engine, tenant, _call("e2", model="gpt-5-mini"), NOW)
    assert below.decision is PolicyDecision.BLOCK
    assert below.reason == "dept_policy=quality-first, min_tier=standard"
    within = authorize(engine, tenant, _call("e3", model="claude-sonnet-4-5"), NOW)
    assert within.decision is PolicyDecision.ALLOW
    # The tenant's own tiers come first.
    with engine.begin() as connection:
        put_tier_overrides(connection, tenant, {"gpt-5-mini": "standard"})
    assert authorize(engine, tenant, _call("e4", model="gpt-5-mini"), NOW).decision is (
        PolicyDecision.ALLOW
    )


def test_holds_expire_after_their_ttl(engine):
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "1", "action_at_cap": "block"})
    assert authorize(engine, tenant, _call("e1"), NOW).decision is PolicyDecision.ALLOW
    assert authorize(engine, tenant, _call("e2"), NOW + HOLD_TTL_MS - 1).decision is (
        PolicyDecision.BLOCK
    )
    assert _held(engine, tenant, NOW + HOLD_TTL_MS) == 0
    assert authorize(engine, tenant, _call("e3"), NOW + HOLD_TTL_MS).decision is (
        PolicyDecision.ALLOW
    )
    assert _hold_count(engine) == 1  # the expired hold was dropped


def test_concurrent_authorisations_never_hold_more_than_the_cap(engine):
    cap = {"scope": "organization", "cap_usd": "10", "action_at_cap": "block"}
    tenant = _setup(engine, cap)
    other, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    with engine.begin() as connection:
        put_budgets(connection, other.tenant_id, [BudgetSpec.from_json(cap)], NOW)
    start = threading.Barrier(16)

    def ask(n: int) -> tuple[int, PolicyDecision]:
        start.wait() if n < 16 else None
        who = tenant if n % 2 else other.tenant_id
        return who, authorize(engine, who, _call(f"e{n}", cost=3 * USD), NOW).decision

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(40)))
    for who in (tenant, other.tenant_id):
        allowed = [d for t, d in answers if t == who and d is PolicyDecision.ALLOW]
        assert len(allowed) == 3  # 3 x 3 USD fit in 10 USD; a fourth would not
        assert _held(engine, who) == 9 * USD


def test_the_connection_goes_back_to_the_pool_fully_durable(engine):
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "10"})
    authorize(engine, tenant, _call("e1"), NOW)
    pooled = [engine.connect() for _ in range(engine.pool.size())]  # whichever it was
    try:
        for connection in pooled:
            if engine.dialect.name == "sqlite":
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            else:
                assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        for connection in pooled:
            connection.close()


def test_sqlite_reservations_commit_on_their_own_connections_and_the_ledger_sees_them(tmp_path):
    engine = connect(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    reservations = reservation_engine(engine)
    assert reservations is not engine
    assert reservation_engine(engine) is reservations  # one pool per ledger engine
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "10"})
    assert authorize(engine, tenant, _call("e1"), NOW).decision is PolicyDecision.ALLOW
    assert _held(engine, tenant) == 1 * USD  # read through the ledger's own pool
    with reservations.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        checkpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() < checkpoint
    engine.dispose()
    reservations.dispose()


def test_an_in_memory_ledger_reserves_on_its_own_engine():
    engine = connect("sqlite://")
    assert reservation_engine(engine) is engine


def test_on_sqlite_an_authorisation_waits_for_the_write_lock_or_says_it_would(tmp_path):
    engine = connect(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "10"})
    writer = engine.raw_connection()
    writer.driver_connection.execute("BEGIN IMMEDIATE")  # another transaction writing
    try:
        with pytest.raises(WouldWait):
            authorize(engine, tenant, _call("e1"), NOW, wait=False)
        assert _hold_count(engine) == 0  # nothing held

        done = threading.Event()
        answers = []

        def waiting() -> None:
            answers.append(authorize(engine, tenant, _call("e2"), NOW))
            done.set()

        thread = threading.Thread(target=waiting)
        thread.start()
        assert not done.wait(0.2)  # it waits for the lock...
    finally:
        writer.driver_connection.rollback()
        writer.close()
    thread.join(5)
    assert done.is_set()  # ...and decides once it is free
    assert answers[0].decision is PolicyDecision.ALLOW
    assert _held(engine, tenant) == 1 * USD
    engine.dispose()
    reservation_engine(engine).dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_reservation_whose_connection_the_server_closed_is_made_on_a_new_one(engine):
    tenant = _setup(engine, {"scope": "organization", "cap_usd": "10"})
    assert authorize(engine, tenant, _call("e1"), NOW).decision is PolicyDecision.ALLOW
    with engine.connect() as connection:  # as a restart of the server would, for the others
        ended = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar()
    assert ended >= 1  # the reservation's connection among them (it is not pinged before use)
    assert authorize(engine, tenant, _call("e2"), NOW).decision is PolicyDecision.ALLOW
    assert authorize(engine, tenant, _call("e3"), NOW).decision is PolicyDecision.ALLOW
    assert (_held(engine, tenant), _hold_count(engine)) == (3 * USD, 3)
