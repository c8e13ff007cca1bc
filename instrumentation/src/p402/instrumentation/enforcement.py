"""Pre-call policy enforcement (``P402_ENFORCEMENT``): decide each metered call before it
leaves the process, and allow it, send it with another model, or refuse it with a 402.

``cached`` (the default)
    A background thread fetches the tenant's snapshot (``GET /v1/policy``: tier overrides,
    department policies, budgets with what they have spent and reserved) every
    ``refresh_seconds`` (an unchanged snapshot answers 304). The call's path decides from it
    locally, with no network call: a call whose owners no policy or budget covers is not even
    parsed. The process adds its own calls to the snapshot's figures: a call's cost bound is
    counted from the moment it is allowed (so concurrent calls of this process cannot
    overshoot together), its actual cost once it is recorded, until a snapshot fetched
    :data:`SETTLE_SECONDS` later (by when the event has been exported and ingested). What
    a budget can overshoot by is therefore the spend of OTHER processes during one refresh
    interval (plus their calls in flight).

    The decision is precomputed as far as the snapshot allows, once per snapshot: per set of
    owner values, the *plan* (the department's policy, the budgets covering them, each with
    what the snapshot leaves of its cap); per model, the *choice* (the tier step and the
    integer rates of the call's cost bound, for the UTC day). A call then costs one scan of
    its body (model and output limit), its bound in integer picodollars, and a check-and-add
    of that bound on each covering budget; the full rules run only when a budget would reach
    its cap, or for a model of no known price.
``strict``
    Before sending, the call's maximum cost is reserved with ``POST /v1/authorize`` (one round
    trip), which decides on the ledger's own figures in a transaction serialised per tenant:
    concurrent calls, in any number of processes, cannot overshoot a cap. The reservation is
    released when the call's event (same ``p402.event.id``) is ingested, or expires.
``off``
    Nothing is checked.

A call's cost bound: input tokens at most the request body's size in bytes, output tokens at
most its ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` /
``generationConfig.maxOutputTokens`` (4,096 when it sets none:
:data:`~p402.instrumentation.policy_rules.DEFAULT_OUTPUT_TOKENS`), priced at the model's
highest rates.

When the policy source cannot be reached (no snapshot yet, none fetched for
:data:`STALE_AFTER_REFRESHES` refresh intervals, or ``POST /v1/authorize`` failing),
``P402_FAIL_MODE`` decides: ``open`` lets the call through (``p402.policy.reason`` says why),
``closed`` refuses it. The first calls of a process wait for the first fetch (at most
:data:`FIRST_FETCH_WAIT_SECONDS`).

A refused call never reaches the provider: the application gets a synthetic HTTP 402 with the
provider's own error shape (so the SDK raises its usual status error and does not retry), and
an event is still recorded, ``p402.policy.result = blocked``, with no cost.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from p402.instrumentation._http import ILLEGAL_IN_HEADER, Connection, Disconnected
from p402.instrumentation._metering import load_json, replace_request_body
from p402.instrumentation.config import Enforcement, FailMode, P402Config
from p402.instrumentation.exceptions import ConfigurationError
from p402.instrumentation.ids import new_event_id
from p402.instrumentation.money import from_picos, parse_usd, to_picos, usd_str
from p402.instrumentation.policy_rules import (
    DEFAULT_OUTPUT_TOKENS,
    BudgetView,
    TierOf,
    TierPolicy,
    TierStep,
    Verdict,
    bound_rates,
    cost_bound_picos,
    evaluate,
    tier_step,
    within_caps,
)
from p402.instrumentation.tiers import ModelTier, tier_of
from p402.instrumentation.vocabulary import (
    API_KEY_HEADER,
    OWNER_DIMENSIONS,
    ApiFormat,
    BudgetPeriod,
    BudgetScope,
    CapAction,
    PolicyDecision,
    PolicyResult,
    RoutingPreference,
)

__all__ = [
    "FIRST_FETCH_WAIT_SECONDS",
    "SETTLE_SECONDS",
    "STALE_AFTER_REFRESHES",
    "Enforcer",
    "PolicyUnavailable",
    "Snapshot",
    "refusal_body",
]

SETTLE_SECONDS: Final = 10.0
"""How long after a call is recorded its cost still counts locally (over the snapshot)."""
STALE_AFTER_REFRESHES: Final = 3
"""A snapshot not refreshed for this many intervals counts as unavailable."""
FIRST_FETCH_WAIT_SECONDS: Final = 2.0
RETRY_SECONDS: Final = 5.0
"""How soon a failed fetch is tried again."""
HTTP_TIMEOUT_SECONDS: Final = 5.0

_KEYS: Final = re.compile(
    rb'"m(?:odel"\s*:\s*"([^"\\]*)"'
    rb'|(?:ax_tokens|ax_completion_tokens|ax_output_tokens|axOutputTokens)"\s*:\s*(\d+))'
)
"""A ``"model"`` key with a string value (group 1) or an output limit key with a number
(group 2); the literal prefix ``"m`` common to every key keeps the search fast."""
_LIMIT_DIGITS: Final = 18
_UNLIMITED_OUTPUT: Final = 10**18
"""The output limit of a request whose limit has more than :data:`_LIMIT_DIGITS` digits."""
_MODEL_IN_PATH: Final = re.compile(r"(/models?/)([^/:]+)")


class PolicyUnavailable(Exception):
    """The policy source could not answer."""


# --- the snapshot --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Budget:
    key: str
    """What this process's own spend on the budget is counted under (a ``str``: its hash is
    computed once)."""
    view: BudgetView
    """The budget with the snapshot's figures (spent and held)."""
    headroom: int
    """What the snapshot leaves of the cap (picodollars; below 0 past it)."""


@dataclass(slots=True)
class _Choice:
    """A call to one model of one provider under one plan: the tier step, and the rates of
    the cost bound of the model it goes on with, for one UTC day."""

    step: TierStep
    until: float
    """The end of the UTC day the rates are for, in ``time.monotonic()`` seconds."""
    rates: tuple[int, int, int] | None
    """``None`` when there is nothing to check on integers: no budgets, the call blocked by
    the tier policy, or a model of no known price."""
    as_asked: bool
    """The tier step lets the model asked for through unchanged."""


@dataclass(slots=True)
class _Plan:
    """What a call for one set of owners is decided against, precomputed for one snapshot:
    the department's policy, the budgets covering the owners, and the choice per model."""

    policy: TierPolicy | None
    budgets: tuple[_Budget, ...]
    choices: dict[tuple[str, str], _Choice] = field(default_factory=dict)

    def choose(self, provider: str, model: str, tier: TierOf) -> _Choice:
        """Make (and remember) the choice for a call to ``model`` now; :attr:`choices` has it
        until the end of the UTC day."""
        step = tier_step(model, self.policy, tier)
        wall, now = time.time(), time.monotonic()
        day = int(wall) // _DAY_SECONDS
        priced = self.budgets and step.blocked is None
        rates = bound_rates(provider, step.chosen, day) if priced else None
        as_asked = step.result is PolicyResult.ALLOWED and step.chosen == model
        until = now + (day + 1) * _DAY_SECONDS - wall
        choice = _Choice(step, until, rates, as_asked)
        self.choices[provider, model] = choice
        return choice


_MAX_PLANS: Final = 4096
"""Plans kept per snapshot (a plan per combination of owner values that budgets name)."""
_UNPLANNED: Final = _Plan(None, ())
_DAY_SECONDS: Final = 86_400


@dataclass(slots=True)
class Snapshot:
    """``GET /v1/policy`` as the call's path reads it."""

    version: str
    refresh_seconds: float
    tier_overrides: Mapping[str, ModelTier | str]
    policies: Mapping[str, TierPolicy]
    organization: tuple[_Budget, ...]
    named: Mapping[str, Mapping[str, tuple[_Budget, ...]]]
    """Scope → owner name → the budgets of that owner (only the scopes that have budgets)."""
    fetched: float
    """``time.monotonic()`` of the last successful fetch (also of an unchanged one)."""
    _tiers: dict[str, ModelTier | None] = field(default_factory=dict)
    plans: dict[tuple[str | None, ...], _Plan | None] = field(default_factory=dict, init=False)
    """The plans made so far, by the values of :attr:`plan_scopes` in a call's owners."""
    plan_scopes: tuple[str, ...] = field(default=(), init=False)
    """The owner dimensions a plan depends on: the department (policies) and every scope that
    has budgets."""
    stale_after: float = field(default=0.0, init=False)
    """Seconds after :attr:`fetched` when the snapshot counts as unavailable."""

    def __post_init__(self) -> None:
        self.stale_after = STALE_AFTER_REFRESHES * self.refresh_seconds
        scopes = ["department"] if self.policies else []
        scopes += [scope for scope in self.named if scope not in scopes]
        self.plan_scopes = tuple(scopes)

    def tier(self, model: str) -> ModelTier | None:
        """The tier of ``model`` under this snapshot's overrides (remembered)."""
        try:
            return self._tiers[model]
        except KeyError:
            found = self._tiers[model] = tier_of(model, self.tier_overrides)
            return found

    @classmethod
    def from_json(cls, body: Mapping[str, Any], fetched: float) -> Snapshot:
        policies = {
            item["department"]: TierPolicy(
                department=item["department"],
                min_model=item.get("min_model"),
                max_model=item.get("max_model"),
                routing=RoutingPreference(item.get("routing") or "quality-first"),
            )
            for item in body.get("policies") or ()
        }
        organization: list[_Budget] = []
        named: dict[str, dict[str, list[_Budget]]] = {}
        for item in body.get("budgets") or ():
            scope = BudgetScope(item["scope"])
            period = BudgetPeriod(item["period"])
            view = BudgetView(
                scope=scope,
                name=item["name"],
                period=period,
                cap_picos=to_picos(parse_usd(item["cap_usd"])),
                used_picos=to_picos(parse_usd(item["spent_usd"]) + parse_usd(item["held_usd"])),
                action=CapAction(item["action_at_cap"]),
                downgrade_model=item.get("downgrade_model"),
            )
            budget = _Budget(
                key=f"{scope.value}\x1f{item['name']}\x1f{period.value}",
                view=view,
                headroom=view.cap_picos - view.used_picos,
            )
            if scope is BudgetScope.ORGANIZATION:
                organization.append(budget)
            else:
                named.setdefault(scope.value, {}).setdefault(item["name"], []).append(budget)
        return cls(
            version=str(body.get("version", "")),
            refresh_seconds=float(body.get("refresh_seconds") or 10),
            tier_overrides=dict(body.get("tier_overrides") or {}),
            policies=policies,
            organization=tuple(organization),
            named={
                scope: {name: tuple(budgets) for name, budgets in owners.items()}
                for scope, owners in named.items()
            },
            fetched=fetched,
        )

    def covering(self, owners: Mapping[str, str]) -> tuple[_Budget, ...]:
        """The budgets that cover a call made for ``owners``."""
        found = self.organization
        for scope, by_name in self.named.items():
            value = owners.get(scope)
            if value is not None and (budgets := by_name.get(value)):
                found = found + budgets
        return found

    def plan(self, owners: Mapping[str, str]) -> _Plan | None:
        """The plan of a call made for ``owners``; ``None`` when no policy or budget covers
        it (remembered per owner values the plan depends on)."""
        key = tuple(map(owners.get, self.plan_scopes))
        try:
            return self.plans[key]
        except KeyError:
            pass
        policy = self.policies.get(owners.get("department", "")) if self.policies else None
        budgets = self.covering(owners)
        plan = _Plan(policy, budgets) if policy is not None or budgets else None
        if len(self.plans) >= _MAX_PLANS:
            self.plans.clear()
        self.plans[key] = plan
        return plan

    def stale(self, now: float) -> bool:
        return now - self.fetched > self.stale_after


# --- this process's own spend --------------------------------------------------------------


_Reservation = tuple[tuple[_Budget, ...], int]
"""A call's share of its budgets: the budgets and the picodollars counted on each."""


class _LocalSpend:
    """What this process has spent or reserved per budget since the snapshot counted it.

    Not locked itself: the enforcer holds its lock around every use."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}
        self._settled: deque[tuple[float, _Reservation]] = deque()

    def _add(self, budgets: tuple[_Budget, ...], picos: int) -> None:
        used = self.used
        for budget in budgets:
            used[budget.key] = used.get(budget.key, 0) + picos

    def reserve(self, budgets: tuple[_Budget, ...], picos: int) -> _Reservation:
        self._add(budgets, picos)
        return budgets, picos

    def reserve_within(self, budgets: tuple[_Budget, ...], picos: int) -> _Reservation | None:
        """Reserve ``picos`` if no budget passes its cap with it (the snapshot's figures plus
        this process's own); ``None``, reserving nothing, otherwise."""
        used = self.used
        for budget in budgets:
            if used.get(budget.key, 0) + picos > budget.headroom:
                return None
        for budget in budgets:
            used[budget.key] = used.get(budget.key, 0) + picos
        return budgets, picos

    def settle(self, reservation: _Reservation, actual_picos: int, now: float) -> None:
        budgets, reserved = reservation
        self._add(budgets, actual_picos - reserved)
        self._settled.append((now, (budgets, actual_picos)))

    def forget_before(self, moment: float) -> None:
        while self._settled and self._settled[0][0] <= moment:
            _, (budgets, picos) = self._settled.popleft()
            self._add(budgets, -picos)


# --- talking to the policy source ----------------------------------------------------------


class _PolicyClient:
    """``GET /v1/policy`` and ``POST /v1/authorize`` over a small pool of keep-alive
    connections, with the P402 API key. Never metered: it is not a provider's traffic.

    A request goes out in one write, head and body together, and its answer is read by
    :mod:`p402.instrumentation._http` (``http.client`` writes head and body apart, two
    wake-ups of the server per authorisation, and parses a response's head with the ``email``
    package)."""

    MAX_IDLE = 8

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        if api_key and ILLEGAL_IN_HEADER.search(api_key):
            raise ConfigurationError("the P402 API key holds a line break or NUL")
        host = parts.netloc.rpartition("@")[2] or self._host
        self._head = f"Host: {host}\r\n" + (f"{API_KEY_HEADER}: {api_key}\r\n" if api_key else "")
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Connection(self._host, self._port, https=self._https, timeout=HTTP_TIMEOUT_SECONDS)

    def _give_back(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _message(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> bytes:
        head = f"{method} {self._base}{path} HTTP/1.1\r\n{self._head}"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if body is None:
            return f"{head}\r\n".encode("latin-1")
        return f"{head}content-length: {len(body)}\r\n\r\n".encode("latin-1") + body

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        message = self._message(method, path, body, headers)
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more
            connection = self._take()
            reused = connection.is_open
            try:
                answer = connection.exchange(message, head_only=method == "HEAD")
            except OSError as error:
                stale = reused and isinstance(
                    error, (Disconnected, BrokenPipeError, ConnectionResetError)
                )
                if attempt or not stale:
                    raise PolicyUnavailable(f"{type(error).__name__}: {error}") from None
                continue
            if connection.is_open:
                self._give_back(connection)
            return answer
        raise AssertionError("unreachable")

    def fetch(self, version: str | None) -> Mapping[str, Any] | None:
        """The snapshot; ``None`` when it is still ``version``."""
        headers = {"if-none-match": f'"{version}"'} if version else {}
        status, data = self._request("GET", "/v1/policy", None, headers)
        if status == 304:
            return None
        if status != 200:
            raise PolicyUnavailable(f"GET /v1/policy answered {status}")
        return _json_object(data, "GET /v1/policy")

    def authorize(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode()
        status, answer = self._request(
            "POST", "/v1/authorize", data, {"content-type": "application/json"}
        )
        if status != 200:
            raise PolicyUnavailable(f"POST /v1/authorize answered {status}")
        return _json_object(answer, "POST /v1/authorize")

    def close(self) -> None:
        """Close every connection, now or when it comes back from a request in flight."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _json_object(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        value = json.loads(data, parse_float=Decimal)
    except ValueError:
        raise PolicyUnavailable(f"{what} did not answer JSON") from None
    if not isinstance(value, Mapping):
        raise PolicyUnavailable(f"{what} did not answer a JSON object")
    return value


# --- reading and changing the request ------------------------------------------------------


def _scan(content: bytes) -> tuple[str | None, int, int]:
    """One pass over a JSON request body for what the decision needs: the value of its
    ``"model"`` key when it has exactly one (``None`` otherwise), how many ``"model"`` keys it
    has, and the largest output limit it sets anywhere (an upper bound of the one that
    applies; the default when none). A regex over the raw bytes rather than a JSON parse:
    several times faster on a body of a few kilobytes, and a quoted key is never matched
    inside a string (there its quotes are escaped)."""
    model, models, limit = b"", 0, -1
    for text, number in _KEYS.findall(content):
        if text:
            models += 1
            model = text
        elif number:
            # more digits than any real limit (or than int() takes) is as good as unlimited
            value = int(number) if len(number) <= _LIMIT_DIGITS else _UNLIMITED_OUTPUT
            if value > limit:
                limit = value
    return (
        (model.decode() if models == 1 else None),
        models,
        (limit if limit >= 0 else DEFAULT_OUTPUT_TOKENS),
    )


def refusal_body(api_format: ApiFormat, reason: str) -> dict[str, Any]:
    """A 402 error body in the provider's own shape, so its SDK reads it as usual."""
    message = f"P402 policy blocked this call: {reason}"
    if api_format is ApiFormat.ANTHROPIC:
        return {"type": "error", "error": {"type": "billing_error", "message": message}}
    if api_format is ApiFormat.GEMINI:
        return {"error": {"code": 402, "message": message, "status": "FAILED_PRECONDITION"}}
    return {"error": {"message": message, "type": "p402_policy_blocked", "code": "policy_blocked"}}


def _refusal(request: Any, api_format: ApiFormat, reason: str) -> Any:
    module = sys.modules[type(request).__module__.split(".")[0]]
    response = module.Response(
        402,
        headers={"content-type": "application/json", "x-should-retry": "false"},
        content=json.dumps(refusal_body(api_format, reason)).encode(),
        request=request,
    )
    response.elapsed = timedelta(0)
    return response


# --- the enforcer --------------------------------------------------------------------------


class Enforcer:
    """Decides each metered call before it is sent; see the module docstring."""

    def __init__(self, config: P402Config) -> None:
        self.mode = config.enforcement
        self.fail_closed = config.fail_mode is FailMode.CLOSED
        self.owner_defaults = dict(config.owner_defaults)
        self._client = _PolicyClient(config.endpoint, config.api_key)
        self._lock = threading.Lock()
        self._local = _LocalSpend()
        self._snapshot: Snapshot | None = None
        self._problem = "no policy snapshot yet"
        self._reset()
        reference = weakref.ref(self)

        def reset_in_child() -> None:
            if (enforcer := reference()) is not None:
                enforcer._reset()

        os.register_at_fork(after_in_child=reset_in_child)

    def _reset(self) -> None:
        self._fetched_once = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # --- the snapshot thread --------------------------------------------------------------

    def start(self) -> None:
        """Start fetching the snapshot in the background (``cached`` mode only)."""
        if self.mode is not Enforcement.CACHED or self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._refresh_forever, name="p402-policy", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=HTTP_TIMEOUT_SECONDS + 1)
        self._client.close()

    def _refresh_forever(self) -> None:
        while not self._stopping.is_set():
            self.refresh()
            self._fetched_once.set()
            snapshot = self._snapshot
            fresh = snapshot is not None and not snapshot.stale(time.monotonic())
            self._stopping.wait(snapshot.refresh_seconds if fresh and snapshot else RETRY_SECONDS)

    def refresh(self) -> bool:
        """Fetch the snapshot now; ``True`` when the policy source answered."""
        current = self._snapshot
        asked = time.monotonic()
        try:
            body = self._client.fetch(current.version if current else None)
        except PolicyUnavailable as error:
            self._problem = f"policy source unreachable ({error})"
            return False
        if body is None and current is not None:
            # Unchanged: the server has not counted any new spend, ours included.
            current.fetched = asked
            return True
        try:
            snapshot = Snapshot.from_json(body or {}, asked)
        except (KeyError, TypeError, ValueError) as error:
            self._problem = f"policy snapshot unreadable ({error!r})"
            return False
        with self._lock:
            self._snapshot = snapshot
            self._local.forget_before(asked - SETTLE_SECONDS)
        return True

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    # --- the call's path ------------------------------------------------------------------

    def apply(self, exchange: Any, request: Any, content: bytes) -> None:
        """Decide the call about to be sent and apply the decision to ``request`` and
        ``exchange`` (a refused call gets ``exchange.refusal``, the response to return)."""
        owners = exchange.owners
        if self.owner_defaults:
            owners = {**self.owner_defaults, **owners}
        if self.mode is Enforcement.STRICT:
            self._strict(exchange, request, content, owners)
            return
        # cached: the common case runs on this path with no call to the rules.
        snapshot = self._snapshot
        now = time.monotonic()
        if snapshot is None or now - snapshot.fetched > snapshot.stale_after:
            snapshot = self._current_snapshot()
            if snapshot is None:
                self._unavailable(exchange, request, self._problem)
                return
        plan = snapshot.plans.get(tuple(map(owners.get, snapshot.plan_scopes)), _UNPLANNED)
        if plan is _UNPLANNED:
            plan = snapshot.plan(owners)
        if plan is None:
            return  # no policy or budget covers the call: it is not even read
        model, models, max_output = _scan(content)
        in_path = False
        if model is None or exchange.request_body is not None:
            model, in_path = _model_of(exchange, content, model, models)
            if model is None:
                return
        provider = exchange.route.name
        choice = plan.choices.get((provider, model))
        if choice is None or now >= choice.until:
            choice = plan.choose(provider, model, snapshot.tier)
        rates = choice.rates
        if rates is not None:  # within every cap with the call's bound, on integers?
            fixed, per_input, per_output = rates
            cost = fixed + per_input * len(content) + per_output * max_output
            with self._lock:
                reservation = self._local.reserve_within(plan.budgets, cost)
            if reservation is not None:
                exchange.reservation = reservation
                if choice.as_asked:
                    return
                verdict = within_caps(model, choice.step, cost)
            else:
                verdict = self._decide(exchange, plan, choice, snapshot, model, content, max_output)
        else:
            verdict = self._decide(exchange, plan, choice, snapshot, model, content, max_output)
        if verdict.result is PolicyResult.ALLOWED and verdict.decision is PolicyDecision.ALLOW:
            return
        _apply_verdict(
            exchange, request, model, in_path, verdict.decision, verdict.result,
            verdict.model, verdict.reason,
        )  # fmt: skip

    def _current_snapshot(self) -> Snapshot | None:
        snapshot = self._snapshot
        if snapshot is None or snapshot.stale(time.monotonic()):
            if self._thread is None:
                self.start()
            if snapshot is None and not self._fetched_once.is_set():
                self._fetched_once.wait(FIRST_FETCH_WAIT_SECONDS)
            snapshot = self._snapshot
            if snapshot is None or snapshot.stale(time.monotonic()):
                return None
        return snapshot

    def _decide(
        self,
        exchange: Any,
        plan: _Plan,
        choice: _Choice,
        snapshot: Snapshot,
        model: str,
        content: bytes,
        max_output: int,
    ) -> Verdict:
        """The full rules (:func:`~p402.instrumentation.policy_rules.evaluate`) on the
        snapshot's figures plus this process's own, reserving the bound unless blocked."""
        step = choice.step
        if step.blocked is not None:
            return step.blocked
        budgets = plan.budgets
        if not budgets:
            return within_caps(model, step, None)
        provider, max_input = exchange.route.name, len(content)
        with self._lock:
            local = self._local
            used = local.used
            views = [
                b.view._replace(used_picos=b.view.used_picos + extra)
                if (extra := used.get(b.key))
                else b.view
                for b in budgets
            ]
            verdict = evaluate(
                model,
                policy=plan.policy,
                tier=snapshot.tier,
                budgets=views,
                cost_of=lambda name: cost_bound_picos(provider, name, max_input, max_output),
                step=step,
            )
            if verdict.allowed:
                exchange.reservation = local.reserve(budgets, verdict.cost_picos or 0)
        return verdict

    def _strict(
        self, exchange: Any, request: Any, content: bytes, owners: Mapping[str, str]
    ) -> None:
        model, in_path, max_output = _read_request(exchange, content)
        if model is None:
            return
        exchange.event_id = new_event_id()
        provider = exchange.route.name
        max_input = len(content)
        bound = cost_bound_picos(provider, model, max_input, max_output, datetime.now(UTC))
        body: dict[str, Any] = {
            "event_id": exchange.event_id,
            "provider": provider,
            "model": model,
            "owner": {k: v for k, v in owners.items() if k in OWNER_DIMENSIONS},
            "max_input_tokens": max_input,
            "max_output_tokens": max_output,
        }
        if bound is not None:
            body["max_cost_usd"] = usd_str(from_picos(bound))
        try:
            answer = self._client.authorize(body)
            decision = PolicyDecision(answer["decision"])
            result = PolicyResult(answer["policy_result"])
            chosen = str(answer.get("model") or model)
            reason = answer.get("reason")
        except (PolicyUnavailable, KeyError, ValueError) as error:
            self._unavailable(exchange, request, f"policy source unreachable ({error})")
            return
        _apply_verdict(exchange, request, model, in_path, decision, result, chosen, reason)

    def _unavailable(self, exchange: Any, request: Any, problem: str) -> None:
        if self.fail_closed:
            reason = f"{problem}; fail_mode=closed"
            exchange.policy_result = PolicyResult.BLOCKED
            exchange.policy_reason = reason
            exchange.refusal = _refusal(request, exchange.route.format, reason)
        else:
            exchange.policy_reason = f"{problem}; fail_mode=open"

    def settle(self, exchange: Any, cost: Decimal | None) -> None:
        """The call's actual cost is known (``None``: none was recorded): count it in place
        of its bound (on the recorder thread)."""
        reservation = exchange.reservation
        if reservation is None:
            return
        exchange.reservation = None
        with self._lock:
            self._local.settle(reservation, 0 if cost is None else to_picos(cost), time.monotonic())


def _read_request(exchange: Any, content: bytes) -> tuple[str | None, bool, int]:
    """The model the request names, whether it is named in the URL (Gemini, Bedrock, Vertex
    AI), and its output limit; the body is parsed only when a cheap look cannot be sure."""
    model, models, limit = _scan(content)
    if model is None or exchange.request_body is not None:
        model, in_path = _model_of(exchange, content, model, models)
        return model, in_path, limit
    return model, False, limit


def _model_of(
    exchange: Any, content: bytes, scanned: str | None, models: int
) -> tuple[str | None, bool]:
    """The model of a request :func:`_scan` could not be sure of (``scanned``: what it
    found), and whether it is named in the URL."""
    body = exchange.request_body
    if scanned is not None and (body is None or body.get("model") == scanned):
        return scanned, False
    if body is None and models > 1:
        body = exchange.request_body = load_json(content) or {}
    named = body.get("model") if body is not None else None
    if isinstance(named, str) and named:
        return named, False
    facts = exchange.format.request_facts(exchange.endpoint, exchange.path, body or {})
    return facts.model, facts.model is not None


def _apply_verdict(
    exchange: Any,
    request: Any,
    model: str,
    in_path: bool,
    decision: PolicyDecision,
    result: PolicyResult,
    chosen: str,
    reason: str | None,
) -> None:
    exchange.policy_result = result
    exchange.policy_reason = reason
    if decision is PolicyDecision.BLOCK:
        exchange.refusal = _refusal(request, exchange.route.format, reason or "blocked")
        return
    if decision is not PolicyDecision.DOWNGRADE or chosen == model:
        return
    exchange.model_original = model
    if in_path:
        path = _MODEL_IN_PATH.sub(
            lambda m: m.group(1) + quote(chosen, safe="") if unquote(m.group(2)) == model
            else m.group(0),
            exchange.path,
            count=1,
        )  # fmt: skip
        request.url = request.url.copy_with(path=path)
        exchange.path = path
        return
    body = exchange.request_body
    if body is None:
        body = load_json(exchange.request_content or request.content) or {}
    rewritten = {**body, "model": chosen}
    replace_request_body(request, rewritten)
    exchange.request_body = rewritten
