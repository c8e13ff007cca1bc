"""``GET /v1/reconciliation``: the providers' own reports against the metered events."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import Parameter

from p402.api.dependencies import CallerIdentity, LedgerEngine
from p402.api.errors import ApiError
from p402.api.routes.filters import Cursor, Limit, RangeEnd, RangeStart, parse_range
from p402.ledger.paging import InvalidCursor, page_of
from p402.ledger.provider_reports import PROVIDERS
from p402.ledger.reconciliation import reconcile

__all__ = ["get_reconciliation"]


@get("/v1/reconciliation", opt={"role": "read"}, tags=["imports"], sync_to_thread=True)
def get_reconciliation(
    engine: LedgerEngine,
    identity: CallerIdentity,
    provider: Annotated[
        str | None,
        Parameter(required=False, description="e.g. openai; default: every imported provider"),
    ] = None,
    from_: RangeStart = None,
    to: RangeEnd = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Provider-reported cost and tokens (imported reports) against the metered events (the
    spend rollup), per provider, UTC day and model, over the whole UTC days overlapping
    ``[from, to)``, ``limit`` rows a page; ``totals`` per provider, over the whole range, on
    every page. Without ``provider``: every provider with imported reports.

    With provider tokens and metered tokens each side's input plus output tokens (cache and
    reasoning tokens are inside those totals):

    - ``cost_coverage_pct`` = metered_cost_usd / provider_cost_usd * 100
    - ``token_coverage_pct`` = metered tokens / provider tokens * 100
    - ``cost_gap_usd`` = provider_cost_usd - metered_cost_usd (negative when more was
      metered than billed); ``unmatched_provider_usd`` = max(cost_gap_usd, 0), the provider
      spend no metered event accounts for
    - ``provider_unmapped_usd``: provider cost of report rows the import mapping attributes
      to no department, project or employee
    - ``metered_unowned_usd``: metered cost of events with no department, project, client or
      employee
    - ``provider_usd_per_mtok`` = provider_cost_usd / provider tokens * 1e6;
      ``metered_usd_per_mtok`` = metered_cost_usd / metered tokens * 1e6
    - ``price_drift_pct`` = (provider_usd_per_mtok - metered_usd_per_mtok) /
      metered_usd_per_mtok * 100: positive when the provider charged more per token than
      P402 computed. The rates blend input and output tokens, so a different token mix on the
      two sides shows as drift too.

    Sums of money are exact decimal strings. Ratios are rounded half-even, percentages to
    0.01 and rates to 0.000001 USD per million tokens (a picodollar per token), from unrounded
    figures. A figure that cannot be computed (no provider report for the day and model, a
    zero denominator) is null, never 0.
    """
    if provider is not None and provider not in PROVIDERS:
        raise ApiError(
            400,
            "invalid_parameter",
            f"provider must be one of {', '.join(PROVIDERS)}, not {provider!r}",
        )
    from_ms, to_ms = parse_range(from_, to)
    with engine.connect() as connection:
        rows, totals = reconcile(
            connection, identity.tenant_id, provider=provider, from_ms=from_ms, to_ms=to_ms
        )
    try:
        page, next_cursor = page_of(rows, key=_row_key, limit=limit, cursor=cursor)
    except InvalidCursor as error:
        raise ApiError(400, "invalid_cursor", str(error)) from None
    return {"data": page, "totals": totals, "next_cursor": next_cursor}


def _row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """The order of the rows: provider, day (an ISO date), model (none first)."""
    return (row["provider"], row["day"], row["model"] or "")
