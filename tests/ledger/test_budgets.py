"""Budgets: figures from the rollups of the current UTC period, projections, status, and the
session costs that session budgets are checked against."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import text

from p402.instrumentation.money import to_picos
from p402.instrumentation.vocabulary import BudgetPeriod, BudgetStatus, CapAction
from p402.ledger.budgets import (
    BudgetSpec,
    InvalidBudget,
    budget_states,
    period_bounds,
    projected_picos,
    put_budgets,
)
from p402.ledger.clock import from_iso
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.holds import CallToAuthorize, authorize
from p402.ledger.keys import Role, create_key
from p402.ledger.price_overrides import add_price_override
from p402.ledger.rerating import rerate

USD = 10**12
NOW = from_iso("2026-11-20T12:00:00Z")  # a Friday


def _event(event_id: str, at: str, picos: int | None, **fields: object) -> EventRecord:
    return EventRecord(
        event_id=event_id,
        ts_ms=from_iso(at),
        usage_evidence="provider_response",
        cost_evidence="computed" if picos is not None else "unpriced",
        privacy_mode="metadata_only",
        provider="openai",
        model_used="gpt-5-mini",
        input_tokens=100,
        output_tokens=10,
        cost_picos=picos,
        **fields,  # type: ignore[arg-type]
    )


def _budget(scope: str, name: str = "", period: str = "month", cap: str = "10", **more: str):
    return BudgetSpec.from_json(
        {"scope": scope, "name": name, "period": period, "cap_usd": cap, **more}
    )


def _put(engine, tenant_id: int, *specs: BudgetSpec) -> None:
    with engine.begin() as connection:
        put_budgets(connection, tenant_id, list(specs), NOW)


def _states(engine, tenant_id: int, now: int = NOW, **owners: str):
    with engine.connect() as connection:
        found = budget_states(connection, tenant_id, now, owners=owners or None)
    return {(s.scope.value, s.name, s.period.value): s for s in found}


def test_periods_are_utc_calendar_month_iso_week_and_day():
    assert period_bounds(BudgetPeriod.MONTH, NOW) == (
        from_iso("2026-11-01"),
        from_iso("2026-12-01"),
    )
    assert period_bounds(BudgetPeriod.WEEK, NOW) == (
        from_iso("2026-11-16"),
        from_iso("2026-11-23"),
    )
    assert period_bounds(BudgetPeriod.DAY, NOW) == (
        from_iso("2026-11-20"),
        from_iso("2026-11-21"),
    )
    assert period_bounds(BudgetPeriod.MONTH, from_iso("2026-12-31T23:59:59.999Z")) == (
        from_iso("2026-12-01"),
        from_iso("2027-01-01"),
    )
    # Monday 00:00 starts a week; Sunday 23:59 still belongs to the previous one.
    assert period_bounds(BudgetPeriod.WEEK, from_iso("2026-11-23T00:00:00Z"))[0] == from_iso(
        "2026-11-23"
    )
    assert period_bounds(BudgetPeriod.WEEK, from_iso("2026-11-22T23:59:59Z"))[0] == from_iso(
        "2026-11-16"
    )


def test_spent_is_the_cost_of_the_period_per_scope(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    events = [
        _event("a", "2026-10-31T23:59:59Z", 1 * USD, department="legal"),  # last month
        _event("b", "2026-11-02T09:00:00Z", 2 * USD, department="legal", project="phoenix"),
        _event("c", "2026-11-16T00:00:00Z", 3 * USD, department="legal", employee="alice"),
        _event("d", "2026-11-20T08:00:00Z", 5 * USD, department="sales", employee="alice"),
        _event("e", "2026-11-20T09:00:00Z", None, department="legal"),  # unpriced: no cost
        _event("f", "2026-11-19T23:00:00Z", 7 * USD, project="phoenix"),
    ]
    insert_events(engine, acme.tenant_id, events)
    insert_events(engine, globex.tenant_id, [_event("g", "2026-11-20T01:00:00Z", 100 * USD)])
    _put(
        engine,
        acme.tenant_id,
        _budget("organization"),
        _budget("department", "legal"),
        _budget("department", "legal", "week"),
        _budget("project", "phoenix", "day"),
        _budget("employee", "alice"),
    )

    states = _states(engine, acme.tenant_id)
    spent = {key: state.spent_picos for key, state in states.items()}
    assert spent == {
        ("organization", "", "month"): 17 * USD,
        ("department", "legal", "month"): 5 * USD,
        ("department", "legal", "week"): 3 * USD,
        ("project", "phoenix", "day"): 0,
        ("employee", "alice", "month"): 8 * USD,
    }
    # Another tenant sees none of these budgets, and its spend counts in none of them.
    assert _states(engine, globex.tenant_id) == {}


def test_the_budgets_covering_a_call_have_the_figures_of_the_full_listing(engine):
    # A week that straddles a month (Mon 30 Nov - Sun 6 Dec), every scope and period,
    # spend and live holds on covering and other owners: the covering budgets of a call, read
    # in one go for its owners, are exactly those the listing shows covering it.
    now = from_iso("2026-12-02T12:00:00Z")
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    globex, _ = create_key(engine, tenant="globex", role=Role.INGEST)
    owners = {"department": "legal", "project": "phoenix", "employee": "alice", "session": "s1"}
    events = [
        _event("a", "2026-11-29T23:00:00Z", 1 * USD, department="legal"),  # last week
        _event("b", "2026-11-30T10:00:00Z", 2 * USD, **owners),  # this week, last month
        _event("c", "2026-12-01T10:00:00Z", 4 * USD, department="legal", project="other"),
        _event("d", "2026-12-02T08:00:00Z", 8 * USD, department="sales", employee="alice"),
        _event("e", "2026-12-02T09:00:00Z", 16 * USD, project="phoenix", session="s2"),
    ]
    insert_events(engine, acme.tenant_id, events)
    insert_events(engine, globex.tenant_id, [_event("g", "2026-12-02T01:00:00Z", 99 * USD)])
    budgets = [
        _budget(scope, name, period, cap="100")
        for scope, name in (
            ("organization", ""),
            ("department", "legal"),
            ("department", "sales"),
            ("project", "phoenix"),
            ("project", "other"),
            ("employee", "alice"),
            ("session", "s1"),
            ("session", "s2"),
        )
        for period in ("month", "week", "day")
    ]
    _put(engine, acme.tenant_id, *budgets)
    _put(engine, globex.tenant_id, *budgets)
    for n, (holder, held_for) in enumerate(
        [
            (acme, owners),
            (acme, {"department": "sales", "project": "phoenix"}),
            (acme, {"employee": "bob", "session": "s1"}),
            (globex, owners),
        ]
    ):
        call = CallToAuthorize(f"h{n}", "gpt-5", "openai", held_for, max_cost_picos=(n + 1) * USD)
        assert authorize(engine, holder.tenant_id, call, now).hold_picos == (n + 1) * USD

    listing = _states(engine, acme.tenant_id, now)
    for covered in (
        owners,
        {"project": "phoenix"},
        {"department": "sales", "session": "s2"},
        {"employee": "bob"},
    ):
        expected = {
            key: state
            for key, state in listing.items()
            if key[0] == "organization" or covered.get(key[0]) == key[1]
        }
        assert _states(engine, acme.tenant_id, now, **covered) == expected, covered
    figures = {
        key: (state.spent_picos // USD, state.held_picos // USD)
        for key, state in _states(engine, acme.tenant_id, now, **owners).items()
    }
    assert figures == {
        ("organization", "", "month"): (28, 6),
        ("organization", "", "week"): (30, 6),
        ("organization", "", "day"): (24, 6),
        ("department", "legal", "month"): (4, 1),
        ("department", "legal", "week"): (6, 1),
        ("department", "legal", "day"): (0, 1),
        ("project", "phoenix", "month"): (16, 3),
        ("project", "phoenix", "week"): (18, 3),
        ("project", "phoenix", "day"): (16, 3),
        ("employee", "alice", "month"): (8, 1),
        ("employee", "alice", "week"): (10, 1),
        ("employee", "alice", "day"): (8, 1),
        # the session's whole cost, in the periods it has events in (its last: 30 November)
        ("session", "s1", "month"): (0, 4),
        ("session", "s1", "week"): (2, 4),
        ("session", "s1", "day"): (0, 4),
    }


def test_figures_start_again_at_each_period_boundary(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        acme.tenant_id,
        [
            _event("sun", "2026-11-29T23:59:59.999Z", 4 * USD),  # Sunday, end of the week
            _event("mon", "2026-11-30T00:00:00Z", 1 * USD),  # Monday, last day of November
            _event("dec", "2026-12-01T00:00:00Z", 2 * USD),
        ],
    )
    _put(
        engine,
        acme.tenant_id,
        _budget("organization", period="month"),
        _budget("organization", period="week"),
        _budget("organization", period="day"),
    )
    before = _states(engine, acme.tenant_id, from_iso("2026-11-30T23:59:59.999Z"))
    after = _states(engine, acme.tenant_id, from_iso("2026-12-01T00:00:00Z"))
    assert before["organization", "", "month"].spent_picos == 5 * USD
    assert before["organization", "", "week"].spent_picos == 3 * USD  # Monday 30 to Sunday 6
    assert before["organization", "", "day"].spent_picos == 1 * USD
    assert after["organization", "", "month"].spent_picos == 2 * USD
    assert after["organization", "", "week"].spent_picos == 3 * USD  # the same week
    next_week = _states(engine, acme.tenant_id, from_iso("2026-12-07T00:00:00Z"))
    assert next_week["organization", "", "week"].spent_picos == 0
    assert after["organization", "", "day"].spent_picos == 2 * USD


def test_projection_extends_the_velocity_of_the_elapsed_period():
    start, end = from_iso("2026-11-01"), from_iso("2026-12-01")  # 30 days
    # 10 days elapsed, 10 USD spent: 1 USD a day for 30 days.
    assert projected_picos(10 * USD, start, end, from_iso("2026-11-11")) == 30 * USD
    # Half an hour in: the velocity is measured over at least a 24th of the period.
    assert projected_picos(1 * USD, start, end, from_iso("2026-11-01T00:30:00Z")) == 24 * USD
    # At 7/30 of a day past the minimum the division rounds down to the picodollar.
    assert projected_picos(7, start, end, from_iso("2026-11-04")) == 70


def test_state_has_consumed_pct_projection_velocity_and_status(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        acme.tenant_id,
        [
            _event("a", "2026-11-02T00:00:00Z", 6 * USD, department="legal"),
            _event("b", "2026-11-03T00:00:00Z", 4 * USD, department="sales"),
        ],
    )
    _put(
        engine,
        acme.tenant_id,
        _budget("department", "legal", cap="100"),
        _budget("department", "sales", cap="25"),
        _budget("organization", cap="12"),
        _budget("project", "idle", cap="1"),
        _budget("employee", "alice", cap="0"),
    )
    now = from_iso("2026-11-11")  # a third of November
    states = _states(engine, acme.tenant_id, now)
    legal = states["department", "legal", "month"]
    assert legal.consumed_pct == Decimal("6.00")
    assert legal.projected_picos == 18 * USD
    assert legal.velocity_picos_per_day == to_picos(Decimal("0.6"))
    assert legal.status is BudgetStatus.OK
    assert (legal.period_start_ms, legal.period_end_ms) == (
        from_iso("2026-11-01"),
        from_iso("2026-12-01"),
    )
    sales = states["department", "sales", "month"]
    assert (sales.projected_picos, sales.status) == (12 * USD, BudgetStatus.OK)
    assert sales.overage_picos == 0
    organization = states["organization", "", "month"]
    assert organization.consumed_pct == Decimal("83.33")
    assert organization.status is BudgetStatus.WARNING
    assert organization.overage_picos == 18 * USD
    assert states["project", "idle", "month"].status is BudgetStatus.OK
    zero = states["employee", "alice", "month"]
    assert (zero.consumed_pct, zero.status) == (Decimal(100), BudgetStatus.EXCEEDED)

    insert_events(engine, acme.tenant_id, [_event("c", "2026-11-10T00:00:00Z", 5 * USD)])
    sales_then = _states(engine, acme.tenant_id, now)["organization", "", "month"]
    assert sales_then.status is BudgetStatus.EXCEEDED
    assert sales_then.remaining_picos == 0


def test_projected_over_before_the_warning_threshold(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(engine, acme.tenant_id, [_event("a", "2026-11-02T00:00:00Z", 3 * USD)])
    _put(engine, acme.tenant_id, _budget("organization", cap="10"))
    state = _states(engine, acme.tenant_id, from_iso("2026-11-06"))["organization", "", "month"]
    assert state.consumed_pct == Decimal("30.00")
    assert state.projected_picos == 18 * USD
    assert state.status is BudgetStatus.PROJECTED_OVER


def test_budgets_are_upserted_by_scope_name_and_period(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.ADMIN)
    _put(engine, acme.tenant_id, _budget("department", "legal", cap="10"))
    _put(
        engine,
        acme.tenant_id,
        _budget(
            "department",
            "legal",
            cap="12.5",
            action_at_cap="downgrade",
            downgrade_model="gpt-5-mini",
        ),
        _budget("department", "legal", "day", cap="1"),
    )
    states = _states(engine, acme.tenant_id)
    assert len(states) == 2
    monthly = states["department", "legal", "month"]
    assert monthly.cap_picos == to_picos(Decimal("12.5"))
    assert monthly.action_at_cap is CapAction.DOWNGRADE
    assert monthly.downgrade_model == "gpt-5-mini"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"scope": "galaxy", "cap_usd": "1"}, "scope"),
        ({"scope": "organization", "name": "x", "cap_usd": "1"}, "no name"),
        ({"scope": "department", "cap_usd": "1"}, "names its department"),
        ({"scope": "organization", "cap_usd": 1.5}, "cap_usd"),
        ({"scope": "organization", "cap_usd": "-1"}, "negative"),
        ({"scope": "organization", "cap_usd": "0.0000000000001"}, "more than 12 decimal places"),
        ({"scope": "organization"}, "required"),
        ({"scope": "organization", "cap_usd": "1", "period": "year"}, "period"),
        ({"scope": "organization", "cap_usd": "1", "action_at_cap": "downgrade"}, "downgrade"),
        ({"scope": "organization", "cap_usd": "1", "colour": "red"}, "unknown"),
    ],
)
def test_invalid_budgets_are_refused_with_the_reason(item, message):
    with pytest.raises(InvalidBudget, match=message):
        BudgetSpec.from_json(item)


# --- session costs -------------------------------------------------------------------------


def _session_costs(engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, cost_picos FROM session"))
        return {name: int(cost) for name, cost in rows}


def test_a_session_budget_caps_the_sessions_cost(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    insert_events(
        engine,
        acme.tenant_id,
        [
            _event("a", "2026-11-20T10:00:00Z", 2 * USD, session="s1"),
            _event("b", "2026-11-20T10:01:00Z", 3 * USD, session="s1"),
            _event("c", "2026-11-20T10:02:00Z", None, session="s1"),
            _event("d", "2026-11-20T10:02:00Z", 9 * USD, session="s2"),
        ],
    )
    _put(engine, acme.tenant_id, _budget("session", "s1", "day", cap="4"))
    state = _states(engine, acme.tenant_id)["session", "s1", "day"]
    assert state.spent_picos == 5 * USD
    assert state.projected_picos == 5 * USD
    assert state.status is BudgetStatus.EXCEEDED


def test_session_costs_add_up_exactly_under_concurrent_ingest(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    threads, batches, size = 6, 5, 20
    errors: list[BaseException] = []

    def ingest(worker: int) -> None:
        try:
            for batch in range(batches):
                records = [
                    _event(
                        f"w{worker}-{batch}-{n}",
                        "2026-11-20T10:00:00Z",
                        worker * 1000 + n,
                        session=f"s{n % 3}",
                    )
                    for n in range(size)
                ]
                insert_events(engine, acme.tenant_id, records)
                insert_events(engine, acme.tenant_id, records)  # delivered twice
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=ingest, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with engine.connect() as connection:
        expected = dict(
            connection.execute(
                text("SELECT session, SUM(cost_picos) FROM economic_event GROUP BY session")
            ).all()
        )
    assert _session_costs(engine) == {name: int(cost) for name, cost in expected.items()}
    assert sum(_session_costs(engine).values()) == sum(
        (w * 1000 + n) * batches for w in range(threads) for n in range(size)
    )


def test_session_costs_stay_exact_when_a_report_is_replaced_or_re_rated(engine):
    acme, _ = create_key(engine, tenant="acme", role=Role.INGEST)
    foreign = [
        _event("otel-1", "2026-11-20T10:00:00Z", 100, session="s1", source="genai",
               response_key="openai:r1"),
        _event("otel-2", "2026-11-20T10:00:00Z", 200, session="s2", source="genai",
               response_key="openai:r2"),
        _event("otel-3", "2026-11-20T10:00:00Z", 300, session="s3", source="genai",
               response_key="openai:r3"),
    ]  # fmt: skip
    insert_events(engine, acme.tenant_id, foreign)
    assert _session_costs(engine) == {"s1": 100, "s2": 200, "s3": 300}
    # P402's own reports of the same calls replace the others: same session, another one.
    insert_events(
        engine,
        acme.tenant_id,
        [
            _event("p402-1", "2026-11-20T10:00:00Z", 70, session="s1", response_key="openai:r1"),
            _event("p402-2", "2026-11-20T10:00:00Z", 80, session="s9", response_key="openai:r2"),
        ],
    )
    assert _session_costs(engine) == {"s1": 70, "s2": 0, "s3": 300, "s9": 80}
    # Re-rating under negotiated rates changes the events' costs, and the sessions' with them.
    add_price_override(
        engine, acme.tenant_id, model="gpt-5-mini", input_per_mtok="1", output_per_mtok="2"
    )
    rerate(engine, acme.tenant_id)
    per_event = 100 * 1_000_000 + 10 * 2_000_000  # picodollars of 100 input + 10 output tokens
    assert _session_costs(engine) == {
        "s1": per_event,
        "s2": 0,
        "s3": per_event,
        "s9": per_event,
    }
