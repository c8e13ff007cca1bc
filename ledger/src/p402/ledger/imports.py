"""Historical import: providers' usage and cost reports stored beside the metered events.

Imported results are not economic events: they keep the provider's own figures in
``imported_usage``, one row per report result, identified by its natural key (bucket and
group), so importing the same report again changes nothing and a revised report updates the
figures in place. They are attributed to owners by the tenant's import mapping: a
provider-side id (OpenAI ``project_id``, ``api_key_id``, ``user_id``; Anthropic
``workspace_id``, ``api_key_id``) → department, project, employee. For each owner dimension
the most specific id that names it wins (API key, then user, then project or workspace).
Changing the mapping re-attributes every imported row, so imports always follow the current
rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, RowMapping, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from p402.ledger.clock import now_ms
from p402.ledger.locks import Locked, lock_tenant
from p402.ledger.models import IMPORT_SOURCE_FIELDS, ImportedUsage, ImportMapping
from p402.ledger.provider_reports import PROVIDERS, ReportedResult

__all__ = [
    "ATTRIBUTED_DIMENSIONS",
    "MAX_NAME_LENGTH",
    "Attribution",
    "ImportOutcome",
    "InvalidMapping",
    "MappingRule",
    "import_results",
    "mapping_rules",
    "replace_mapping",
]

IMPORTED = ImportedUsage.__table__  # type: ignore[attr-defined]
MAPPINGS = ImportMapping.__table__  # type: ignore[attr-defined]

ATTRIBUTED_DIMENSIONS: Final = ("department", "project", "employee")
MAX_NAME_LENGTH: Final = 200
"""The longest provider-side id or owner name a mapping rule keeps."""
_ID_COLUMNS: Final = {field: f"provider_{field}" for field in IMPORT_SOURCE_FIELDS}
_FIGURES: Final = (
    "kind",
    "bucket_start_ms",
    "bucket_end_ms",
    "model",
    "line_item",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "requests",
    "cost_picos",
    "raw",
)
_CHUNK: Final = 500


class InvalidMapping(ValueError):
    """An import mapping rule that cannot be stored."""


@dataclass(frozen=True, slots=True)
class MappingRule:
    """Results of ``provider`` whose ``field`` is ``value`` belong to these owners."""

    provider: str
    field: str
    value: str
    department: str | None = None
    project: str | None = None
    employee: str | None = None

    def check(self) -> None:
        if self.provider not in PROVIDERS:
            raise InvalidMapping(
                f"provider: {self.provider!r} is not one of {', '.join(PROVIDERS)}"
            )
        if self.field not in IMPORT_SOURCE_FIELDS:
            raise InvalidMapping(
                f"field: {self.field!r} is not one of {', '.join(IMPORT_SOURCE_FIELDS)}"
            )
        if not self.value:
            raise InvalidMapping("value: must not be empty")
        for name in ("value", *ATTRIBUTED_DIMENSIONS):
            text = getattr(self, name)
            if text is not None and len(text) > MAX_NAME_LENGTH:
                raise InvalidMapping(f"{name}: at most {MAX_NAME_LENGTH} characters")

    def json(self) -> dict[str, str | None]:
        return {
            "provider": self.provider,
            "field": self.field,
            "value": self.value,
            **{name: getattr(self, name) for name in ATTRIBUTED_DIMENSIONS},
        }


class Attribution:
    """The owners of imported results under a set of mapping rules."""

    def __init__(self, rules: Iterable[MappingRule]) -> None:
        self._rules = {(rule.provider, rule.field, rule.value): rule for rule in rules}

    def owners(self, provider: str, ids: Mapping[str, str | None]) -> dict[str, str | None]:
        """Department, project and employee for a result with these provider-side ``ids``."""
        matching = [
            rule
            for field in IMPORT_SOURCE_FIELDS
            if (value := ids.get(field)) is not None
            and (rule := self._rules.get((provider, field, value))) is not None
        ]
        return {
            name: next((v for rule in matching if (v := getattr(rule, name)) is not None), None)
            for name in ATTRIBUTED_DIMENSIONS
        }


def mapping_rules(connection: Connection, tenant_id: int) -> list[MappingRule]:
    rows = connection.execute(
        select(MAPPINGS)
        .where(MAPPINGS.c.tenant_id == tenant_id)
        .order_by(MAPPINGS.c.provider, MAPPINGS.c.field, MAPPINGS.c.value)
    ).mappings()
    return [
        MappingRule(
            provider=row["provider"],
            field=row["field"],
            value=row["value"],
            **{name: row[name] for name in ATTRIBUTED_DIMENSIONS},
        )
        for row in rows
    ]


def replace_mapping(engine: Engine, tenant_id: int, rules: Sequence[MappingRule]) -> int:
    """Make ``rules`` the tenant's whole import mapping and re-attribute its imported rows.

    Returns how many imported rows changed owners. Replacements of one tenant's mapping take
    turns: the last one is the mapping.
    """
    for rule in rules:
        rule.check()
    seen = {(rule.provider, rule.field, rule.value) for rule in rules}
    if len(seen) != len(rules):
        raise InvalidMapping("the same provider, field and value appear more than once")
    with engine.begin() as connection:
        lock_tenant(connection, Locked.SETTINGS, tenant_id)
        connection.execute(delete(MAPPINGS).where(MAPPINGS.c.tenant_id == tenant_id))
        if rules:
            connection.execute(
                insert(MAPPINGS), [{"tenant_id": tenant_id, **rule.json()} for rule in rules]
            )
        return _reattribute(connection, tenant_id, Attribution(rules))


def _ids(row: RowMapping) -> dict[str, str | None]:
    return {field: row[column] for field, column in _ID_COLUMNS.items()}


def _reattribute(connection: Connection, tenant_id: int, attribution: Attribution) -> int:
    columns = [IMPORTED.c[column] for column in _ID_COLUMNS.values()]
    owners = [IMPORTED.c[name] for name in ATTRIBUTED_DIMENSIONS]
    rows = connection.execute(
        select(IMPORTED.c.id, IMPORTED.c.provider, *columns, *owners).where(
            IMPORTED.c.tenant_id == tenant_id
        )
    ).mappings()
    changes = []
    for row in rows:
        wanted = attribution.owners(row["provider"], _ids(row))
        if any(wanted[name] != row[name] for name in ATTRIBUTED_DIMENSIONS):
            changes.append({"row_id": row["id"], **{f"new_{k}": v for k, v in wanted.items()}})
    if changes:
        connection.execute(
            update(IMPORTED)
            .where(IMPORTED.c.id == bindparam("row_id"))
            .values({name: bindparam(f"new_{name}") for name in ATTRIBUTED_DIMENSIONS}),
            changes,
        )
    return len(changes)


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What an import did: results read, and how many were new, revised or already there."""

    results: int
    inserted: int
    updated: int
    unchanged: int

    def json(self) -> dict[str, int]:
        return {
            "results": self.results,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
        }


def _row(
    tenant_id: int, provider: str, result: ReportedResult, attribution: Attribution, at: int
) -> dict[str, Any]:
    ids = {field: getattr(result, field) for field in IMPORT_SOURCE_FIELDS}
    return {
        "tenant_id": tenant_id,
        "provider": provider,
        "natural_key": result.natural_key,
        **{name: getattr(result, name) for name in _FIGURES},
        **{column: ids[field] for field, column in _ID_COLUMNS.items()},
        **attribution.owners(provider, ids),
        "imported_ms": at,
    }


def import_results(
    engine: Engine, tenant_id: int, provider: str, results: Sequence[ReportedResult]
) -> ImportOutcome:
    """Store ``results`` of ``provider`` for the tenant in one transaction, attributed by the
    current mapping; a result already imported with the same figures is left as it is."""
    by_key = {result.natural_key: result for result in results}  # a repeated page counts once
    at = now_ms()
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    inserted = updated = 0
    with engine.begin() as connection:
        attribution = Attribution(
            rule for rule in mapping_rules(connection, tenant_id) if rule.provider == provider
        )
        keys = list(by_key)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            stored: dict[str, str] = {
                key: raw
                for key, raw in connection.execute(
                    select(IMPORTED.c.natural_key, IMPORTED.c.raw).where(
                        IMPORTED.c.tenant_id == tenant_id,
                        IMPORTED.c.provider == provider,
                        IMPORTED.c.natural_key.in_(chunk),
                    )
                )
            }
            new = [
                _row(tenant_id, provider, by_key[k], attribution, at)
                for k in chunk
                if k not in stored
            ]
            if new:
                statement = dialect.insert(IMPORTED).on_conflict_do_nothing()
                inserted += len(connection.execute(statement.returning(IMPORTED.c.id), new).all())
            revised = [k for k in chunk if k in stored and stored[k] != by_key[k].raw]
            for key in revised:
                values = _row(tenant_id, provider, by_key[key], attribution, at)
                connection.execute(
                    update(IMPORTED)
                    .where(
                        IMPORTED.c.tenant_id == tenant_id,
                        IMPORTED.c.provider == provider,
                        IMPORTED.c.natural_key == key,
                    )
                    .values(values)
                )
            updated += len(revised)
    return ImportOutcome(
        results=len(by_key),
        inserted=inserted,
        updated=updated,
        unchanged=len(by_key) - inserted - updated,
    )
