"""Reading the providers' own usage and cost reports (their Admin API exports; the consoles'
CSV downloads are read by :mod:`p402.ledger.provider_csv` into the same results).

Accepted documents are the JSON pages the providers' Admin APIs answer, one page or a list of
pages, decoded with ``json.loads(..., parse_float=Decimal)`` so that no amount passes through
a binary float:

- OpenAI ``GET /v1/organization/usage/completions`` (and ``/usage/embeddings``): buckets with
  ``start_time`` / ``end_time`` (Unix seconds) and ``results`` of
  ``organization.usage.completions.result`` (``input_tokens`` including
  ``input_cached_tokens``, ``output_tokens``, ``num_model_requests``, grouped by ``model``,
  ``project_id``, ``api_key_id``, ``user_id``, ``batch``, ``service_tier``);
- OpenAI ``GET /v1/organization/costs``: ``organization.costs.result`` with ``amount``
  ``{value, currency}`` in currency units, ``line_item`` (``"gpt-4o-2024-08-06, input"``) and
  ``project_id``;
- Anthropic ``GET /v1/organizations/usage_report/messages``: buckets with ``starting_at`` /
  ``ending_at`` (RFC 3339) and ``results`` with ``uncached_input_tokens``,
  ``cache_creation`` ``{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``,
  ``cache_read_input_tokens``, ``output_tokens``, grouped by ``model``, ``api_key_id``,
  ``workspace_id``, ``service_tier``, ``context_window``;
- Anthropic ``GET /v1/organizations/cost_report``: ``amount`` as a decimal string in the
  currency's lowest unit (cents: ``"123.45"`` USD is $1.2345), ``currency``, ``description``,
  ``model``, ``token_type``, ``workspace_id``.

Token counts are normalised to the span contract: input is the total including cache reads
and writes, which are subsets of it. A figure the report does not carry stays ``None``.
Each result's natural key is its bucket and every grouping field it carries, so the same
result imported again is recognised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from p402.instrumentation.money import parse_usd, to_picos
from p402.ledger.clock import from_iso

__all__ = [
    "MAX_COUNT",
    "MAX_UNIX_SECONDS",
    "PROVIDERS",
    "InvalidReport",
    "ReportedResult",
    "openai_line_item_model",
    "read_report",
]

PROVIDERS: Final = ("openai", "anthropic")
MAX_COUNT: Final = 10**15
"""More tokens or requests than one result can hold: a larger figure is an error."""
MAX_PICOS: Final = 2**63 - 1
"""The largest amount the ledger's 64-bit columns hold, in picodollars."""
MAX_UNIX_SECONDS: Final = 253_402_300_799
"""9999-12-31T23:59:59Z, the last moment the ledger can show."""


class InvalidReport(ValueError):
    """The document is not a usage or cost report of the provider; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (" …" if len(problems) > 20 else ""))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ReportedResult:
    """One result of a report: a time bucket, its group, and the provider's figures."""

    kind: str  # "usage" or "cost"
    natural_key: str
    bucket_start_ms: int
    bucket_end_ms: int
    raw: str
    model: str | None = None
    line_item: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    user_id: str | None = None
    workspace_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    requests: int | None = None
    cost_picos: int | None = None


class _Problem(ValueError):
    pass


def _count(result: Mapping[str, Any], *path: str) -> int | None:
    value: Any = result
    for name in path:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _Problem(f"{'.'.join(path)}: expected an object")
        value = value.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise _Problem(
            f"{'.'.join(path)}: expected a non-negative integer up to {MAX_COUNT}, got {value!r}"
        )
    return value


def _sum(*counts: int | None) -> int | None:
    present = [count for count in counts if count is not None]
    return sum(present) if present else None


def _text(result: Mapping[str, Any], name: str, limit: int = 200) -> str | None:
    value = result.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Problem(f"{name}: expected a string of at most {limit} characters, got {value!r}")
    return value


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _natural_key(
    kind: str, start_ms: int, end_ms: int, result: Mapping[str, Any], measures: frozenset[str]
) -> str:
    group = {name: value for name, value in result.items() if name not in measures}
    return hashlib.sha256(_canonical([kind, start_ms, end_ms, group]).encode()).hexdigest()


def _usd_picos(amount: object, currency: object, *, cents: bool) -> int:
    if not isinstance(currency, str) or currency.upper() != "USD":
        raise _Problem(f"currency: only USD amounts can be imported, got {currency!r}")
    try:
        value = parse_usd(amount)
    except ValueError as error:
        raise _Problem(f"amount: {error}") from None
    picos = to_picos(value / 100 if cents else value)
    if abs(picos) > MAX_PICOS:
        raise _Problem(f"amount: {amount!r} is out of range")
    return picos


# --- OpenAI --------------------------------------------------------------------------------

_OPENAI_USAGE_OBJECTS: Final = frozenset(
    {"organization.usage.completions.result", "organization.usage.embeddings.result"}
)
_OPENAI_USAGE_MEASURES: Final = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "input_cached_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "num_model_requests",
    }
)
_OPENAI_COST_MEASURES: Final = frozenset({"amount"})


def openai_line_item_model(line_item: str | None) -> str | None:
    """``"gpt-4o-2024-08-06, input"`` → ``gpt-4o-2024-08-06``; other line items name no model."""
    if not line_item or ", " not in line_item:
        return None
    model, kind = line_item.rsplit(", ", 1)
    return model if "input" in kind or "output" in kind else None


def _openai_result(start_ms: int, end_ms: int, result: Mapping[str, Any]) -> ReportedResult:
    kind_object = _text(result, "object")
    if kind_object in _OPENAI_USAGE_OBJECTS:
        return ReportedResult(
            kind="usage",
            natural_key=_natural_key("usage", start_ms, end_ms, result, _OPENAI_USAGE_MEASURES),
            bucket_start_ms=start_ms,
            bucket_end_ms=end_ms,
            raw=_canonical(result),
            model=_text(result, "model"),
            project_id=_text(result, "project_id"),
            api_key_id=_text(result, "api_key_id"),
            user_id=_text(result, "user_id"),
            input_tokens=_count(result, "input_tokens"),
            output_tokens=_count(result, "output_tokens"),
            cache_read_tokens=_count(result, "input_cached_tokens"),
            requests=_count(result, "num_model_requests"),
        )
    if kind_object == "organization.costs.result":
        amount = result.get("amount")
        if not isinstance(amount, Mapping):
            raise _Problem("amount: expected an object {value, currency}")
        line_item = _text(result, "line_item", 300)
        return ReportedResult(
            kind="cost",
            natural_key=_natural_key("cost", start_ms, end_ms, result, _OPENAI_COST_MEASURES),
            bucket_start_ms=start_ms,
            bucket_end_ms=end_ms,
            raw=_canonical(result),
            model=openai_line_item_model(line_item),
            line_item=line_item,
            project_id=_text(result, "project_id"),
            api_key_id=_text(result, "api_key_id"),
            cost_picos=_usd_picos(amount.get("value"), amount.get("currency"), cents=False),
        )
    raise _Problem(f"object: not an OpenAI usage or cost result: {kind_object!r}")


def _openai_bucket(bucket: Mapping[str, Any]) -> tuple[int, int, list[Any]]:
    start, end = bucket.get("start_time"), bucket.get("end_time")
    if not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_UNIX_SECONDS
        for t in (start, end)
    ):
        raise _Problem("start_time / end_time: expected Unix seconds")
    results = bucket.get("results", bucket.get("result"))
    if not isinstance(results, list):
        raise _Problem("results: expected a list")
    return int(start) * 1000, int(end) * 1000, results  # type: ignore[arg-type]


# --- Anthropic -----------------------------------------------------------------------------

_ANTHROPIC_USAGE_MEASURES: Final = frozenset(
    {
        "uncached_input_tokens",
        "cache_creation",
        "cache_read_input_tokens",
        "output_tokens",
        "server_tool_use",
    }
)
_ANTHROPIC_COST_MEASURES: Final = frozenset({"amount"})


def _anthropic_result(start_ms: int, end_ms: int, result: Mapping[str, Any]) -> ReportedResult:
    if "uncached_input_tokens" in result:
        uncached = _count(result, "uncached_input_tokens")
        cache_read = _count(result, "cache_read_input_tokens")
        cache_write = _sum(
            _count(result, "cache_creation", "ephemeral_5m_input_tokens"),
            _count(result, "cache_creation", "ephemeral_1h_input_tokens"),
        )
        return ReportedResult(
            kind="usage",
            natural_key=_natural_key("usage", start_ms, end_ms, result, _ANTHROPIC_USAGE_MEASURES),
            bucket_start_ms=start_ms,
            bucket_end_ms=end_ms,
            raw=_canonical(result),
            model=_text(result, "model"),
            api_key_id=_text(result, "api_key_id"),
            workspace_id=_text(result, "workspace_id"),
            input_tokens=_sum(uncached, cache_read, cache_write),
            output_tokens=_count(result, "output_tokens"),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    if "amount" in result:
        return ReportedResult(
            kind="cost",
            natural_key=_natural_key("cost", start_ms, end_ms, result, _ANTHROPIC_COST_MEASURES),
            bucket_start_ms=start_ms,
            bucket_end_ms=end_ms,
            raw=_canonical(result),
            model=_text(result, "model"),
            line_item=_text(result, "description", 300),
            workspace_id=_text(result, "workspace_id"),
            cost_picos=_usd_picos(result["amount"], result.get("currency"), cents=True),
        )
    raise _Problem("not an Anthropic usage or cost result (no uncached_input_tokens or amount)")


def _anthropic_bucket(bucket: Mapping[str, Any]) -> tuple[int, int, list[Any]]:
    start, end = bucket.get("starting_at"), bucket.get("ending_at")
    if not isinstance(start, str) or not isinstance(end, str):
        raise _Problem("starting_at / ending_at: expected RFC 3339 times")
    try:
        start_ms, end_ms = from_iso(start), from_iso(end)
    except ValueError as error:
        raise _Problem(str(error)) from None
    results = bucket.get("results")
    if not isinstance(results, list):
        raise _Problem("results: expected a list")
    return start_ms, end_ms, results


_Reader = tuple[
    Callable[[Mapping[str, Any]], tuple[int, int, list[Any]]],
    Callable[[int, int, Mapping[str, Any]], ReportedResult],
]
_READERS: Final[Mapping[str, _Reader]] = {
    "openai": (_openai_bucket, _openai_result),
    "anthropic": (_anthropic_bucket, _anthropic_result),
}


def _pages(document: object) -> Iterator[tuple[str, object]]:
    pages = document if isinstance(document, list) else [document]
    for page_index, page in enumerate(pages):
        where = f"page {page_index}" if isinstance(document, list) else "page"
        if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
            raise InvalidReport([f"{where}: expected a report page with a 'data' list"])
        for bucket_index, bucket in enumerate(page["data"]):
            yield f"{where}, data[{bucket_index}]", bucket


def read_report(provider: str, document: object) -> list[ReportedResult]:
    """Every result of ``provider``'s usage or cost report ``document``.

    Raises :class:`InvalidReport` listing every problem; nothing is read partially.
    """
    if provider not in _READERS:
        raise InvalidReport([f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}"])
    read_bucket, read_result = _READERS[provider]
    results: list[ReportedResult] = []
    problems: list[str] = []
    for where, bucket in _pages(document):
        if not isinstance(bucket, Mapping):
            problems.append(f"{where}: expected a bucket object")
            continue
        try:
            start_ms, end_ms, items = read_bucket(bucket)
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
            continue
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                problems.append(f"{where}, results[{index}]: expected an object")
                continue
            try:
                results.append(read_result(start_ms, end_ms, item))
            except _Problem as problem:
                problems.append(f"{where}, results[{index}]: {problem}")
    if problems:
        raise InvalidReport(problems)
    return results
