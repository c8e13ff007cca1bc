"""Strict enforcement: reserving a call's maximum cost before it is sent
(``POST /v1/authorize``), and letting the reservation go once the call's event is in.

:func:`authorize` runs in one transaction that is serialised per tenant (PostgreSQL: a
transaction-scoped advisory lock on the tenant; SQLite: ``BEGIN IMMEDIATE``, which holds the
database's write lock), so concurrent calls cannot both take the last of a budget. In it: the
department tier policy and every budget covering the call's owners are checked with
:func:`p402.instrumentation.policy_rules.evaluate`, each budget as ``spent + held + the call's
bound ≤ cap``; an allowed or downgraded call leaves a hold of its bound, keyed by its event
id; expired holds are dropped. Given the caller's key, the same transaction checks the key is
still live, so a key revoked or deleted by any process cannot reserve from then on.

The transaction is the ledger's hot path. It runs on the driver's own connection (one kept at
hand by the reservation engine, :func:`p402.ledger.database.reservation_engine`) with
statements compiled once per dialect, and reads everything it decides from (the budgets and
their figures, the event's hold, the policy, tier overrides, negotiated rates, the key) in
one statement; on PostgreSQL the lock goes in the same round trip (psycopg's pipeline mode),
then the hold with the commit: two round trips, the connection not pinged before. Should the
server have closed it, the authorisation is made again on a new connection, which cannot
hold twice: an event id's hold is found again.

Durability. A hold is committed before it is answered, so it survives a crash of the P402
server. It is committed without waiting for the disk (SQLite ``synchronous=NORMAL`` in WAL
mode, on connections of their own that also leave WAL checkpoints to the ledger's other
writers: :func:`p402.ledger.database.reservation_engine`; PostgreSQL
``synchronous_commit = off``, for this transaction only): a crash of the
machine itself (power, kernel), or of PostgreSQL, can forget the holds of the last moments
(on PostgreSQL at most about three ``wal_writer_delay``, 0.6 s by default) — a hold is a
reservation of minutes, not a record. Events, and the ingest that releases holds, stay fully
durable.

A hold counts against its owners' budgets until the event with that ``p402.event.id`` is
ingested (:func:`release_batch`, called by the ingest transaction that writes the event, so the
event's cost replaces its hold atomically) or until it expires, :data:`HOLD_TTL_MS` after it
was made (a call that never reports back, e.g. its process died, does not hold a budget for
ever; the next authorisation deletes expired holds). Asking again for an event id that holds
already answers the same hold.

A call's bound: the server prices ``max_input_tokens`` and ``max_output_tokens`` (when the
caller sends them) with the tenant's prices (negotiated rates included) and takes the larger
of that and the caller's ``max_cost_usd`` for the model asked for; for a model the server
switches to, its own pricing of the same token bounds (or, without them, the caller's figure).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Numeric,
    bindparam,
    delete,
    event,
    exists,
    insert,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import Label

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.policy_rules import BudgetView, evaluate
from p402.instrumentation.tiers import tier_of
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import (
    BudgetPeriod,
    BudgetScope,
    CapAction,
    PolicyDecision,
    PolicyResult,
)
from p402.ledger.budgets import HOLDS, CoveringBudgets, covering_budgets
from p402.ledger.costing import ledger_cost
from p402.ledger.database import reservation_engine
from p402.ledger.keys import KEY_IS_LIVE
from p402.ledger.locks import Locked
from p402.ledger.policies import POLICY_OF, TIER_OVERRIDES_OF, tier_policy, tiers_of_rows
from p402.ledger.price_overrides import PRICE_OVERRIDES_OF, RateOverride, rate_override

__all__ = [
    "HOLD_TTL_MS",
    "MAX_HOLD_PICOS",
    "Authorization",
    "CallToAuthorize",
    "KeyNotLive",
    "WouldWait",
    "authorize",
    "release_batch",
]

WRITE_LOCK_WAIT_SECONDS: Final = 10.0
"""SQLite: how long an authorisation waits for the database's write lock (as the ledger's
other connections do, with their ``busy_timeout``)."""
HOLD_TTL_MS: Final = 10 * 60 * 1000
"""How long a hold counts when its event does not arrive: 10 minutes."""
MAX_HOLD_PICOS: Final = 10**18
"""The largest hold, 1,000,000 USD: a call whose bound is larger is blocked (the ledger's
integer picodollars keep sums of holds exact, far from their 64-bit limit)."""

_HELD_OWNERS: Final = ("department", "project", "employee", "session")
_RELEASE: Final = text(
    "DELETE FROM budget_hold WHERE tenant_id = :tenant AND event_id IN "
    "(SELECT event_id FROM economic_event WHERE batch = :batch)"
)
_LOCK: Final = text(
    "SELECT pg_advisory_xact_lock(:lock_class, :tenant), "
    "set_config('synchronous_commit', 'off', true), "
    "set_config('plan_cache_mode', 'force_generic_plan', true)"
)
"""PostgreSQL: the tenant's lock, a commit that does not wait for the disk, and the read's
plan made once (prepared by psycopg after a few runs) rather than at every run."""
_DELETE_EXPIRED: Final = delete(HOLDS).where(
    HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.expires_ms <= bindparam("now")
)
_HOLD_OF_EVENT: Final = select(HOLDS.c.model, HOLDS.c.amount_picos, HOLDS.c.expires_ms).where(
    HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.event_id == bindparam("event_id")
)
_EXPIRED: Final = select(literal_column("1", Integer()).label("any")).where(
    exists().where(HOLDS.c.tenant_id == bindparam("tenant"), HOLDS.c.expires_ms <= bindparam("now"))
)
_INSERT_HOLD: Final = insert(HOLDS).values(
    tenant_id=bindparam("tenant"),
    event_id=bindparam("event_id"),
    model=bindparam("hold_model"),
    amount_picos=bindparam("hold_picos"),
    created_ms=bindparam("now"),
    expires_ms=bindparam("hold_expires_ms"),
    **{owner: bindparam(f"hold_{owner}") for owner in _HELD_OWNERS},
)


class KeyNotLive(Exception):
    """The caller's key was revoked or deleted: nothing was held."""


class WouldWait(Exception):
    """SQLite, with ``wait=False``: another transaction holds the database's write lock, so
    the authorisation did not start (nothing was read or held)."""


@dataclass(frozen=True, slots=True)
class CallToAuthorize:
    """A call about to be sent, as ``POST /v1/authorize`` describes it."""

    event_id: str
    model: str
    provider: str | None = None
    owners: Mapping[str, str] = field(default_factory=dict)
    max_cost_picos: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """The answer: the decision, the model to send, why, and the hold made (if any)."""

    event_id: str
    decision: PolicyDecision
    result: PolicyResult
    model: str
    reason: str | None
    hold_picos: int | None
    expires_ms: int | None


# --- the transaction, on the driver's connection -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    """The statement with named parameters (``:name`` or ``%(name)s``)."""
    constants: dict[str, Any]
    """The values the statement itself binds (its literals)."""

    def parameters(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**params, **self.constants} if self.constants else params


@lru_cache(maxsize=16)
def _named_dialect(dialect: Dialect) -> Dialect:
    """The kind of ``dialect`` with named parameters (the driver then takes one dict for
    every statement, whatever it uses of it), and no casts written around them (the
    statements compare them with columns of their own type): short statements, that the
    driver keeps parsed."""
    kind: Any = type(dialect)
    named: Dialect = kind(paramstyle="pyformat" if dialect.paramstyle == "pyformat" else "named")
    named.bind_typing = BindTyping.NONE
    return named


@lru_cache(maxsize=64)
def _compiled(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=_named_dialect(dialect))
    constants = {name: value for name, value in compiled.params.items() if value is not None}
    return _Compiled(compiled.string, constants)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


def _begin_immediate(driver: Any, wait: bool) -> None:
    """SQLite: take the write lock (the reservations' connections do not wait inside SQLite:
    :func:`p402.ledger.database.reservation_engine`); wait for it here, up to
    :data:`WRITE_LOCK_WAIT_SECONDS`, or raise :class:`WouldWait` at once."""
    deadline = time.monotonic() + WRITE_LOCK_WAIT_SECONDS
    pause = 0.0005
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            if not wait:
                raise WouldWait from None
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


class _Transaction:
    """The statements of one serialised transaction on the driver's connection: SQLite holds
    the write lock from the start (``BEGIN IMMEDIATE``); PostgreSQL takes the tenant's lock
    in the same round trip as the first :meth:`read`, ahead of its statements."""

    def __init__(self, driver: Any, dialect: Dialect, tenant_id: int, wait: bool) -> None:
        self._driver = driver
        self._dialect = dialect
        self._pipelined = dialect.name == "postgresql"
        self._before_first_read: list[tuple[ClauseElement, dict[str, int]]] = []
        if self._pipelined:
            lock = {"lock_class": int(Locked.BUDGET_HOLDS), "tenant": tenant_id}
            self._before_first_read.append((_LOCK, lock))
        else:
            _begin_immediate(driver, wait)

    def _execute(self, statement: ClauseElement, params: Mapping[str, Any]) -> Any:
        compiled = _compiled(statement, self._dialect)
        return self._driver.execute(compiled.sql, compiled.parameters(params))

    def read(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[Any]:
        """The rows of ``statement``."""
        first, self._before_first_read = self._before_first_read, []
        if self._pipelined:
            with self._driver.pipeline():
                for lock, lock_params in first:
                    self._execute(lock, lock_params)
                cursor = self._execute(statement, params)
        else:
            cursor = self._execute(statement, params)
        rows: list[Any] = cursor.fetchall()
        return rows

    def write_and_commit(
        self, statements: Sequence[ClauseElement | None], params: Mapping[str, Any]
    ) -> None:
        """Run ``statements`` (``None``: nothing) and commit, in one round trip on
        PostgreSQL."""
        if self._pipelined:
            with self._driver.pipeline():
                for statement in statements:
                    if statement is not None:
                        self._execute(statement, params)
                self._driver.commit()
        else:
            for statement in statements:
                if statement is not None:
                    self._execute(statement, params)
            self._driver.commit()


_KEPT_CONNECTIONS: Final = 4
"""How many of its connections a reservation engine keeps at hand, out of its pool."""
_kept: weakref.WeakKeyDictionary[Engine, deque[PoolProxiedConnection]] = weakref.WeakKeyDictionary()
"""Each reservation engine's connections at hand, taken and given back without the pool's
checkout and checkin (a tenth of a reservation's time on SQLite)."""
_kept_lock: Final = threading.Lock()
os.register_at_fork(after_in_child=_kept.clear)  # a child opens its own


def _kept_of(reservations: Engine) -> deque[PoolProxiedConnection]:
    kept = _kept.get(reservations)
    if kept is None:
        with _kept_lock:
            kept = _kept.get(reservations)
            if kept is None:
                kept = _kept[reservations] = deque()
                event.listen(reservations, "engine_disposed", partial(_close_all, kept))
    return kept


def _close_all(kept: deque[PoolProxiedConnection], engine: Engine) -> None:
    """Close the connections at hand of a disposed engine (their pool is gone)."""
    while kept:
        with suppress(IndexError):
            kept.pop().invalidate()


class _ConnectionLost(Exception):
    """The server closed the reservation's connection (PostgreSQL)."""


def _in_transaction(driver: Any) -> bool:
    info = getattr(driver, "info", None)  # psycopg's
    if info is not None:
        from psycopg.pq import TransactionStatus  # here: a SQLite ledger never loads psycopg

        return bool(info.transaction_status != TransactionStatus.IDLE)
    return bool(driver.in_transaction)  # sqlite3's


@contextmanager
def _tenant_transaction(engine: Engine, tenant_id: int, wait: bool) -> Iterator[_Transaction]:
    """A transaction no other authorisation of the tenant runs beside, committed without
    waiting for the disk (see the module docstring); it commits with
    :meth:`_Transaction.write_and_commit` and rolls back otherwise. Raises
    :class:`_ConnectionLost`, the reservation engine renewed, when its connection was found
    closed."""
    reservations = reservation_engine(engine)
    kept = None if reservations is engine else _kept_of(reservations)
    try:
        pooled = kept.pop() if kept else reservations.raw_connection()
    except IndexError:  # taken by another thread meanwhile
        pooled = reservations.raw_connection()
    ended = False
    try:
        driver = pooled.driver_connection
        assert driver is not None
        try:
            yield _Transaction(driver, engine.dialect, tenant_id, wait)
        except BaseException as error:
            if getattr(driver, "broken", False):  # psycopg: the connection is gone
                pooled.invalidate()
                reservations.dispose()  # its other connections went with the server's
                raise _ConnectionLost from error
            driver.rollback()
            raise
        if _in_transaction(driver):  # not left to the pool (on SQLite it does not roll back)
            driver.rollback()
        ended = True
    finally:
        if ended and kept is not None and len(kept) < _KEPT_CONNECTIONS:
            kept.append(pooled)
        else:
            pooled.close()


def release_batch(connection: Connection, tenant_id: int, batch: str) -> None:
    """Drop the holds of the events one ingest transaction wrote (in that transaction)."""
    connection.execute(_RELEASE, {"tenant": tenant_id, "batch": batch})


# --- the one read ---------------------------------------------------------------------------


def _is_number(column: Any) -> bool:
    return isinstance(column.type, Integer | Numeric)


def _unlabelled(column: Any) -> Any:
    return column.element if isinstance(column, Label) else column


_NULL: Final[Any] = literal_column("NULL")
_NULL_TEXT: Final[Any] = literal_column("CAST(NULL AS VARCHAR)")
_NULL_NUMBER: Final[Any] = literal_column("CAST(NULL AS NUMERIC)")


@dataclass(frozen=True, slots=True)
class _OneRead:
    """The rows of several selects, each of its own kind, read by one statement: each row is
    its kind, then the select's text columns and its number columns, padded with NULLs to a
    shape all share (so they go in one ``UNION ALL``: one statement to run, one round trip).
    A first branch that returns no row gives every column its type; the statement stays
    short enough for the driver to keep its parsed form."""

    statement: Any
    names: Mapping[str, tuple[list[str], list[str]]]
    """Kind → its select's text and number column names."""
    width: int
    """How many text columns every row has."""

    @classmethod
    @lru_cache(maxsize=64)
    def of(cls, kinds: tuple[tuple[str, Any], ...]) -> _OneRead:
        shapes = {
            kind: (
                [c for c in select_.selected_columns if not _is_number(c)],
                [c for c in select_.selected_columns if _is_number(c)],
            )
            for kind, select_ in kinds
        }
        texts_width = max(len(texts) for texts, _ in shapes.values())
        numbers_width = max(len(numbers) for _, numbers in shapes.values())
        typed = [_NULL_TEXT] * (1 + texts_width) + [_NULL_NUMBER] * numbers_width
        branches = [select(*typed).where(literal_column("1") == literal_column("0"))]
        for kind, select_ in kinds:
            texts, numbers = shapes[kind]
            branches.append(
                select_.order_by(None).with_only_columns(
                    literal_column(f"'{kind}'"),
                    *map(_unlabelled, texts),
                    *[_NULL] * (texts_width - len(texts)),
                    *map(_unlabelled, numbers),
                    *[_NULL] * (numbers_width - len(numbers)),
                )
            )
        names = {
            kind: ([c.key for c in texts], [c.key for c in numbers])
            for kind, (texts, numbers) in shapes.items()
        }
        return cls(union_all(*branches), names, texts_width)

    def rows(self, rows: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
        """The rows by kind, each by its select's column names (numbers as ``int``)."""
        found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in self.names}
        first_number = 1 + self.width
        for row in rows:
            kind = row[0]
            texts, numbers = self.names[kind]
            values = dict(zip(texts, row[1:first_number], strict=False))
            for name, number in zip(numbers, row[first_number:], strict=False):
                values[name] = None if number is None else int(number)
            found[kind].append(values)
        return found


# --- the decision --------------------------------------------------------------------------


def _bound_of(
    call: CallToAuthorize, model: str, now_ms: int, prices: Sequence[RateOverride]
) -> int | None:
    if call.max_input_tokens is None and call.max_output_tokens is None:
        return call.max_cost_picos
    usage = TokenUsage(
        input_tokens=call.max_input_tokens or 0, output_tokens=call.max_output_tokens or 0
    )
    priced, _ = ledger_cost(
        usage, model=model, provider=call.provider, ts_ms=now_ms, overrides=prices
    )
    if model == call.model and call.max_cost_picos is not None:
        return max(priced or 0, call.max_cost_picos)
    return priced


def _budget_view(row: Mapping[str, Any], spent_picos: int, held_picos: int) -> BudgetView:
    """A covering budget (:meth:`p402.ledger.budgets.CoveringBudgets.figures`)."""
    return BudgetView(
        scope=BudgetScope(row["scope"]),
        name=row["name"],
        period=BudgetPeriod(row["period"]),
        cap_picos=row["cap_picos"],
        used_picos=spent_picos + held_picos,
        action=CapAction(row["action_at_cap"]),
        downgrade_model=row["downgrade_model"],
    )


def authorize(
    engine: Engine,
    tenant_id: int,
    call: CallToAuthorize,
    now_ms: int,
    *,
    key_id: str | None = None,
    wait: bool = True,
) -> Authorization:
    """Decide ``call`` and, unless it is blocked, hold its bound; see the module docstring.
    With ``key_id`` (the caller's key), raises :class:`KeyNotLive` when that key is no longer
    live, holding nothing. On SQLite, with ``wait=False``, raises :class:`WouldWait` instead
    of waiting for the database's write lock."""
    covering = covering_budgets(tenant_id, call.owners, now_ms)
    department = call.owners.get("department")
    params = {**covering.params, "event_id": call.event_id, "department": department}
    params["key_id"] = key_id
    kinds = [
        *covering.statements.items(),
        ("hold", _HOLD_OF_EVENT),
        ("expired", _EXPIRED),
        ("tier", TIER_OVERRIDES_OF),
        ("price", PRICE_OVERRIDES_OF),
    ]
    if department:
        kinds.append(("policy", POLICY_OF))
    if key_id is not None:
        kinds.append(("key", KEY_IS_LIVE))
    read = _OneRead.of(tuple(kinds))
    try:
        return _authorize(engine, tenant_id, call, now_ms, key_id, wait, read, covering, params)
    except _ConnectionLost:  # once more, on a new connection: nothing held twice by an id
        return _authorize(engine, tenant_id, call, now_ms, key_id, wait, read, covering, params)


def _authorize(
    engine: Engine,
    tenant_id: int,
    call: CallToAuthorize,
    now_ms: int,
    key_id: str | None,
    wait: bool,
    read: _OneRead,
    covering: CoveringBudgets,
    params: dict[str, Any],
) -> Authorization:
    with _tenant_transaction(engine, tenant_id, wait) as transaction:
        found = read.rows(transaction.read(read.statement, params))
        if key_id is not None and not found["key"]:
            raise KeyNotLive(key_id)
        # Expired holds no longer count; they are deleted with this transaction's write.
        cleanup = _DELETE_EXPIRED if found["expired"] else None
        held = [hold for hold in found["hold"] if hold["expires_ms"] > now_ms]
        if held:
            transaction.write_and_commit([cleanup], params)
            model, same = held[0]["model"], held[0]["model"] == call.model
            return Authorization(
                call.event_id,
                PolicyDecision.ALLOW if same else PolicyDecision.DOWNGRADE,
                PolicyResult.ALLOWED if same else PolicyResult.DOWNGRADED,
                model,
                "already authorised",
                held[0]["amount_picos"],
                held[0]["expires_ms"],
            )
        overrides = tiers_of_rows((row["model"], row["tier"]) for row in found["tier"])
        prices = tuple(rate_override(row) for row in sorted(found["price"], key=lambda r: -r["id"]))
        policies = found.get("policy")
        verdict = evaluate(
            call.model,
            policy=tier_policy(policies[0]) if policies else None,
            tier=lambda model: tier_of(model, overrides),
            budgets=[_budget_view(*figures) for figures in covering.figures(found)],
            cost_of=lambda model: _bound_of(call, model, now_ms, prices),
        )
        if not verdict.allowed:
            transaction.write_and_commit([cleanup], params)
            return Authorization(
                call.event_id, verdict.decision, verdict.result, verdict.model, verdict.reason,
                None, None,
            )  # fmt: skip
        hold = verdict.cost_picos or 0
        if hold > MAX_HOLD_PICOS:
            transaction.write_and_commit([cleanup], params)
            largest = usd_str(from_picos(MAX_HOLD_PICOS))
            reason = f"the call's bound is more than the largest hold ({largest} USD)"
            return Authorization(
                call.event_id, PolicyDecision.BLOCK, PolicyResult.BLOCKED, call.model, reason,
                None, None,
            )  # fmt: skip
        expires = now_ms + HOLD_TTL_MS
        params.update(hold_model=verdict.model, hold_picos=hold, hold_expires_ms=expires)
        params.update({f"hold_{owner}": call.owners.get(owner) or None for owner in _HELD_OWNERS})
        transaction.write_and_commit([cleanup, _INSERT_HOLD], params)
        return Authorization(
            call.event_id,
            verdict.decision,
            verdict.result,
            verdict.model,
            verdict.reason,
            hold,
            expires,
        )
