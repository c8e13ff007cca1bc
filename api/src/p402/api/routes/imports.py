"""Historical import of the providers' usage and cost reports, and its attribution mapping:
``POST /v1/imports/{provider}``, ``GET|PUT /v1/imports/mappings``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from litestar import Request, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.openapi_bodies import IMPORT_MAPPING, PROVIDER_REPORT
from p402.api.routes.filters import Cursor, Limit
from p402.api.routes.json_bodies import json_document, refuse_nul
from p402.ledger.imports import (
    ImportOutcome,
    InvalidMapping,
    MappingRule,
    import_results,
    mapping_rules,
    replace_mapping,
)
from p402.ledger.paging import InvalidCursor, page_of
from p402.ledger.provider_csv import CSV_MEDIA_TYPE, InvalidRows, read_csv
from p402.ledger.provider_reports import PROVIDERS, InvalidReport, read_report

__all__ = ["MAX_REPORT_BYTES", "get_import_mappings", "post_import", "put_import_mappings"]

MAX_REPORT_BYTES = 64 * 2**20


@post(
    "/v1/imports/{provider:str}",
    opt={"role": "admin"},
    tags=["imports"],
    status_code=200,
    request_max_body_size=MAX_REPORT_BYTES,
    operation_class=PROVIDER_REPORT.operation_class,
    responses=PROVIDER_REPORT.responses,
)
async def post_import(
    request: Request[object, object, State],
    engine: LedgerEngine,
    identity: CallerIdentity,
    provider: FromPath[str],
) -> dict[str, Any]:
    """Import a provider's usage or cost report: as its Admin API answers it
    (``application/json``: one page, or a JSON list of pages) — OpenAI
    ``/v1/organization/usage/completions`` and ``/v1/organization/costs``; Anthropic
    ``/v1/organizations/usage_report/messages`` and ``/v1/organizations/cost_report`` — or as
    its console exports it (``text/csv``, UTF-8 unless the ``charset`` says otherwise) — OpenAI
    Usage → Export, cost and activity CSV; Anthropic Console Usage and Cost → Export.

    The results are kept with the provider's figures beside the metered events (they are not
    events), attributed by the import mapping. Importing the same report again changes
    nothing; a revised report updates the results it revises. Answers how many results were
    ``inserted``, ``updated`` and ``unchanged``. A document that is not one of the provider's
    reports answers 400 (a CSV: naming the columns it misses); CSV rows that cannot be read
    answer 422 naming each row (the header is row 1). Nothing is imported from a refused report.
    """
    if provider not in PROVIDERS:
        raise ApiError(
            404, "not_found", f"no importer for {provider!r}; choose from {', '.join(PROVIDERS)}"
        )
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    try:
        if media_type == "application/json":
            document = json_document(await request.body(), code="invalid_json")
            results = read_report(provider, document)
        elif media_type == CSV_MEDIA_TYPE:
            results = await request.app.state.run_sync(
                read_csv, provider, await request.body(), charset=_charset(parameters)
            )
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the report as application/json (the Admin API's JSON) or as text/csv "
                "(the console's CSV export)",
            )
    except InvalidRows as error:
        raise ApiError(422, "invalid_report", str(error)) from None
    except InvalidReport as error:
        raise ApiError(400, "invalid_report", str(error)) from None
    outcome: ImportOutcome = await request.app.state.run_sync(
        import_results, engine, identity.tenant_id, provider, results
    )
    return {"provider": provider, **outcome.json()}


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip()
    return None


@dataclass
class MappingRuleBody:
    """Results of ``provider`` whose ``field`` is ``value`` belong to these owners."""

    provider: str
    field: str  # api_key_id, user_id, project_id (OpenAI) or workspace_id (Anthropic)
    value: str
    department: str | None = None
    project: str | None = None
    employee: str | None = None


def _rules_json(rules: list[MappingRule]) -> list[dict[str, str | None]]:
    return [rule.json() for rule in rules]


@get("/v1/imports/mappings", opt={"role": "read"}, tags=["imports"], sync_to_thread=True)
def get_import_mappings(
    engine: LedgerEngine, identity: CallerIdentity, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """The tenant's import mapping: provider-side ids → department, project, employee; by
    provider, field and value, ``limit`` rules a page."""
    with engine.connect() as connection:
        rules = mapping_rules(connection, identity.tenant_id)
    try:
        page, next_cursor = page_of(rules, key=_rule_key, limit=limit, cursor=cursor)
    except InvalidCursor as error:
        raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": _rules_json(page), "next_cursor": next_cursor}


def _rule_key(rule: MappingRule) -> tuple[str, str, str]:
    return (rule.provider, rule.field, rule.value)


@put(
    "/v1/imports/mappings",
    opt={"role": "admin"},
    tags=["imports"],
    sync_to_thread=True,
    operation_class=IMPORT_MAPPING.operation_class,
    responses=IMPORT_MAPPING.responses,
)
def put_import_mappings(
    engine: LedgerEngine, identity: CallerIdentity, data: JSONBody[list[MappingRuleBody]]
) -> dict[str, Any]:
    """Replace the tenant's whole import mapping with this list and re-attribute every
    imported result by it. For each owner dimension the most specific id that names one
    wins: ``api_key_id``, then ``user_id``, then ``project_id`` / ``workspace_id``.
    Answers the mapping and how many imported results changed owners (``reattributed``)."""
    try:
        refuse_nul([asdict(item) for item in data])
    except ValueError as error:
        raise ApiError(400, "invalid_mapping", str(error)) from None
    rules = [
        MappingRule(
            provider=item.provider,
            field=item.field,
            value=item.value,
            department=item.department,
            project=item.project,
            employee=item.employee,
        )
        for item in data
    ]
    try:
        changed = replace_mapping(engine, identity.tenant_id, rules)
    except InvalidMapping as error:
        raise ApiError(400, "invalid_mapping", str(error)) from None
    return {"data": _rules_json(rules), "reattributed": changed, "next_cursor": None}
