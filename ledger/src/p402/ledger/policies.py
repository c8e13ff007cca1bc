"""Department policies (model tier bounds and routing preference), a tenant's model tier
overrides, and the policy snapshot the instrumentation caches (``GET /v1/policy``).

A policy's ``min_model`` and ``max_model`` are model names whose tiers (economy < standard
< premium: :mod:`p402.instrumentation.tiers`, the tenant's overrides first) are the bounds;
a policy naming a model of no known tier is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from p402.instrumentation.money import from_picos, usd_str
from p402.instrumentation.policy_rules import TierPolicy
from p402.instrumentation.tiers import ModelTier, tier_of
from p402.instrumentation.vocabulary import RoutingPreference
from p402.ledger.budgets import BudgetState, budget_states
from p402.ledger.clock import to_iso
from p402.ledger.models import DepartmentPolicy, ModelTierOverride

__all__ = [
    "DEFAULT_REFRESH_SECONDS",
    "POLICY_OF",
    "TIER_OVERRIDES_OF",
    "InvalidPolicy",
    "PolicySnapshot",
    "PolicySpec",
    "department_policy",
    "list_policies",
    "policy_json",
    "policy_snapshot",
    "put_policies",
    "put_tier_overrides",
    "tier_overrides",
    "tier_policy",
    "tiers_of_rows",
]

POLICIES = DepartmentPolicy.__table__  # type: ignore[attr-defined]
TIER_OVERRIDES = ModelTierOverride.__table__  # type: ignore[attr-defined]

DEFAULT_REFRESH_SECONDS: Final = 10
"""How often the instrumentation fetches the snapshot again, unless the server says otherwise."""


class InvalidPolicy(ValueError):
    """A policy or tier override that cannot be stored, with the reason."""


def _insert(connection: Connection) -> Any:
    return (postgresql if connection.dialect.name == "postgresql" else sqlite).insert


# --- tier overrides ------------------------------------------------------------------------


TIER_OVERRIDES_OF: Final = select(TIER_OVERRIDES.c.model, TIER_OVERRIDES.c.tier).where(
    TIER_OVERRIDES.c.tenant_id == bindparam("tenant")
)
"""Tenant ``tenant``'s tier overrides: ``(model, tier)`` rows (:func:`tiers_of_rows`)."""
_POLICY_COLUMNS: Final = (
    POLICIES.c.department,
    POLICIES.c.min_model,
    POLICIES.c.max_model,
    POLICIES.c.routing,
)
POLICY_OF: Final = select(*_POLICY_COLUMNS).where(
    POLICIES.c.tenant_id == bindparam("tenant"), POLICIES.c.department == bindparam("department")
)
"""The policy of department ``department`` of tenant ``tenant``: one row
(:func:`tier_policy`) or none."""


def tiers_of_rows(rows: Iterable[Sequence[Any]]) -> dict[str, ModelTier]:
    """Rows of :data:`TIER_OVERRIDES_OF` as model name → tier."""
    return {model: ModelTier(tier) for model, tier in rows}


def tier_overrides(connection: Connection, tenant_id: int) -> dict[str, ModelTier]:
    """The tenant's own model tiers (model name → tier)."""
    return tiers_of_rows(connection.execute(TIER_OVERRIDES_OF, {"tenant": tenant_id}))


def put_tier_overrides(
    connection: Connection, tenant_id: int, tiers: Mapping[str, str | None]
) -> None:
    """Set the tenant's tier of each model (``None`` removes the override)."""
    for model, tier in tiers.items():
        if not isinstance(model, str) or not model or len(model) > 200:
            raise InvalidPolicy(f"tier override: {model!r} is not a model name")
        if tier is None:
            connection.execute(
                delete(TIER_OVERRIDES).where(
                    TIER_OVERRIDES.c.tenant_id == tenant_id, TIER_OVERRIDES.c.model == model
                )
            )
            continue
        try:
            value = ModelTier(tier).value
        except ValueError:
            allowed = ", ".join(t.value for t in ModelTier)
            raise InvalidPolicy(f"tier of {model}: {tier!r} is not one of {allowed}") from None
        statement = _insert(connection)(TIER_OVERRIDES).values(
            tenant_id=tenant_id, model=model, tier=value
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "model"], set_={"tier": statement.excluded.tier}
            )
        )


# --- department policies -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A department policy as written: upserted by department."""

    department: str
    min_model: str | None = None
    max_model: str | None = None
    routing: RoutingPreference = RoutingPreference.QUALITY_FIRST

    @classmethod
    def from_json(cls, item: object) -> PolicySpec:
        """Read one policy of ``PUT /v1/policies`` (SPEC §9 field names)."""
        if not isinstance(item, Mapping):
            raise InvalidPolicy("a policy is a JSON object")
        unknown = set(item) - {"department", "min_model", "max_model", "routing"}
        if unknown:
            raise InvalidPolicy(f"unknown field(s): {', '.join(sorted(unknown))}")
        department = item.get("department")
        if not isinstance(department, str) or not department or len(department) > 200:
            raise InvalidPolicy("department: required, a name of at most 200 characters")
        models = {}
        for field in ("min_model", "max_model"):
            value = item.get(field) or None
            if value is not None and (not isinstance(value, str) or len(value) > 200):
                raise InvalidPolicy(f"{field}: a model name")
            models[field] = value
        try:
            routing = RoutingPreference(item.get("routing") or RoutingPreference.QUALITY_FIRST)
        except ValueError:
            allowed = ", ".join(r.value for r in RoutingPreference)
            raise InvalidPolicy(
                f"routing: {item.get('routing')!r} is not one of {allowed}"
            ) from None
        return cls(department, models["min_model"], models["max_model"], routing)

    def check(self, overrides: Mapping[str, ModelTier]) -> None:
        """Both bounds name models of a known tier, the minimum not above the maximum."""
        tiers = {}
        for field in ("min_model", "max_model"):
            model = getattr(self, field)
            if model is None:
                continue
            tier = tier_of(model, overrides)
            if tier is None:
                raise InvalidPolicy(
                    f"{field}: {model!r} has no known tier; give it a tier override first"
                )
            tiers[field] = tier
        low, high = tiers.get("min_model"), tiers.get("max_model")
        if low is not None and high is not None and low.rank > high.rank:
            raise InvalidPolicy(
                f"min_model's tier ({low.value}) is above max_model's ({high.value})"
            )


def put_policies(
    connection: Connection, tenant_id: int, specs: Sequence[PolicySpec], now_ms: int
) -> None:
    """Create or replace the policy of each department."""
    overrides = tier_overrides(connection, tenant_id)
    for spec in specs:
        spec.check(overrides)
    for spec in specs:
        statement = _insert(connection)(POLICIES).values(
            tenant_id=tenant_id,
            department=spec.department,
            min_model=spec.min_model,
            max_model=spec.max_model,
            routing=spec.routing.value,
            updated_ms=now_ms,
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "department"],
                set_={
                    key: statement.excluded[key]
                    for key in ("min_model", "max_model", "routing", "updated_ms")
                },
            )
        )


def tier_policy(row: Mapping[Any, Any]) -> TierPolicy:
    """A row of :data:`POLICY_OF`, by column name."""
    return TierPolicy(
        department=row["department"],
        min_model=row["min_model"],
        max_model=row["max_model"],
        routing=RoutingPreference(row["routing"]),
    )


def list_policies(connection: Connection, tenant_id: int) -> list[TierPolicy]:
    """The tenant's department policies, by department."""
    rows = connection.execute(
        select(*_POLICY_COLUMNS)
        .where(POLICIES.c.tenant_id == tenant_id)
        .order_by(POLICIES.c.department)
    )
    return [tier_policy(row._mapping) for row in rows]


def department_policy(
    connection: Connection, tenant_id: int, department: str | None
) -> TierPolicy | None:
    """The policy of ``department``, if it has one."""
    if not department:
        return None
    row = connection.execute(POLICY_OF, {"tenant": tenant_id, "department": department}).first()
    return tier_policy(row._mapping) if row else None


def policy_json(policy: TierPolicy, overrides: Mapping[str, ModelTier]) -> dict[str, Any]:
    """A policy as the API shows it, with the tiers its bounds stand for."""

    def tier(model: str | None) -> str | None:
        found = tier_of(model, overrides) if model else None
        return found.value if found else None

    return {
        "department": policy.department,
        "min_model": policy.min_model,
        "max_model": policy.max_model,
        "min_tier": tier(policy.min_model),
        "max_tier": tier(policy.max_model),
        "routing": policy.routing.value,
    }


# --- the snapshot --------------------------------------------------------------------------


def _usd(picos: int) -> str:
    return usd_str(from_picos(picos))


def _snapshot_budget(state: BudgetState) -> dict[str, Any]:
    return {
        "scope": state.scope.value,
        "name": state.name,
        "period": state.period.value,
        "cap_usd": _usd(state.cap_picos),
        "spent_usd": _usd(state.spent_picos),
        "held_usd": _usd(state.held_picos),
        "remaining_usd": _usd(state.remaining_picos),
        "action_at_cap": state.action_at_cap.value,
        "downgrade_model": state.downgrade_model,
        "status": state.status.value,
        "period_end": to_iso(state.period_end_ms),
    }


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """What the instrumentation decides from; ``version`` changes whenever the body does."""

    version: str
    body: dict[str, Any]


def policy_snapshot(
    connection: Connection,
    tenant_id: int,
    now_ms: int,
    *,
    refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
) -> PolicySnapshot:
    """Tier overrides, department policies and budgets with what remains of each, and how
    often to fetch again."""
    overrides = tier_overrides(connection, tenant_id)
    content: dict[str, Any] = {
        "refresh_seconds": refresh_seconds,
        "tier_overrides": {model: tier.value for model, tier in sorted(overrides.items())},
        "policies": [policy_json(p, overrides) for p in list_policies(connection, tenant_id)],
        "budgets": [_snapshot_budget(s) for s in budget_states(connection, tenant_id, now_ms)],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    version = hashlib.sha256(canonical).hexdigest()[:32]
    return PolicySnapshot(version, {"version": version, "generated_at": to_iso(now_ms), **content})
