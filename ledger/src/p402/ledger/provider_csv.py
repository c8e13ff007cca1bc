"""Reading the usage and cost exports finance users download from the providers' consoles.

Each export's columns mirror the Admin API fields :mod:`p402.ledger.provider_reports` reads,
and each export is read into the same :class:`ReportedResult` rows, so importing, attribution
and reconciliation have one path whichever form a report came in. An export is recognised by
its header row (the order of its columns does not matter; columns not named here are kept in
``raw`` only). Required columns are marked *required*; the others are read where the export's
grouping puts them.

OpenAI, platform.openai.com → Usage → Export (CSV):

- the cost export (``cost_<from>_<to>.csv``): ``start_time`` and ``end_time`` (Unix seconds),
  ``amount_value`` (a decimal in currency units) and ``amount_currency`` (``usd``), *required*;
  ``line_item`` (``"gpt-4o-2024-08-06, input"``: the model is read from it as from the Admin
  API's), ``project_id``, ``api_key_id``, ``user_id``, ``organization_id``, ``quantity_unit``,
  ``api_source``. Not read: ``start_time_iso``, ``end_time_iso``, ``quantity``,
  ``project_name``, ``organization_name``, ``user_email``.
- the activity export (``completions_usage_<from>_<to>.csv``): ``start_time``, ``end_time``
  and ``input_tokens`` (including the cached ones), *required*; ``output_tokens``,
  ``input_cached_tokens``, ``num_model_requests`` (counts may be written ``59200.0``), grouped
  by ``model``, ``project_id``, ``user_id``, ``api_key_id``, ``batch``, ``service_tier``. The
  other token breakdowns (``input_uncached_tokens``, text, audio, image) are parts of these and
  are not read.
- A bucket without figures (every column but the times blank) is a period without spend and
  yields nothing; an export of such periods only may carry the four time columns alone.

Anthropic, console.anthropic.com → Usage / Cost → Export:

- the usage export (``claude_api_tokens_<yyyy>_<mm>.csv``): ``usage_date_utc`` (a UTC date, or
  a date and hour such as ``2026-03-31 02:00``), ``model_version``,
  ``usage_input_tokens_no_cache`` and ``usage_output_tokens``, *required*;
  ``usage_input_tokens_cache_write_5m``, ``usage_input_tokens_cache_write_1h``,
  ``usage_input_tokens_cache_read``; grouped by ``api_key``, ``workspace``, ``usage_type``,
  ``context_window``, ``inference_geo``, ``speed``. Input is the sum of the four input columns,
  cache writes the sum of both windows. Not read: ``web_search_count``.
- the cost export (``claude_api_cost_<yyyy>_<mm>.csv``): ``usage_date_utc`` (a UTC date) and
  ``cost_usd`` (USD, not cents as in the Admin API), *required*; ``model``, ``token_type``,
  ``cost_type``, ``workspace``, ``api_key``, ``api_key_id``, ``usage_type``,
  ``context_window``, ``inference_geo``, ``speed``. ``model`` is a display name, read as the
  model id it spells: ``Claude 3.5 Sonnet 2024-10-22`` → ``claude-3-5-sonnet-20241022``,
  ``Claude Sonnet 4.5`` → ``claude-sonnet-4-5`` (the alias: the export does not say which
  snapshot; reconciliation finds it, see :mod:`p402.ledger.reconciliation`). The line item
  is the model and ``token_type`` (or ``cost_type``). Not read:
  ``list_price_usd``, ``api_key_status``.
- The Console names workspaces and API keys rather than giving their ids: ``workspace`` is read
  as the ``workspace_id`` and ``api_key`` as the ``api_key_id`` (where an ``api_key_id`` column
  is present, it wins), so import mapping rules for these exports name them as the export
  shows them.

A result's natural key is its export, bucket and group (the grouping columns above that are
not blank) and, for rows that share all three, their order in the file: importing the same
export again changes nothing and a revised export updates its rows in place. Amounts are read
as decimals from their text, never through a binary float. A header that is neither export of
the provider raises :class:`InvalidReport` naming the columns each one misses; rows that cannot
be read raise :class:`InvalidRows` naming every such row (the header is row 1, as a spreadsheet
shows it). Nothing is read partially.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from p402.instrumentation.money import parse_usd, to_picos
from p402.ledger.clock import from_iso
from p402.ledger.provider_reports import (
    MAX_COUNT,
    MAX_PICOS,
    MAX_UNIX_SECONDS,
    PROVIDERS,
    InvalidReport,
    ReportedResult,
    openai_line_item_model,
)

__all__ = ["CSV_MEDIA_TYPE", "InvalidRows", "anthropic_model_id", "looks_like_csv", "read_csv"]

CSV_MEDIA_TYPE: Final = "text/csv"
_MINUTE_MS: Final = 60_000
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000
_MAX_USD: Final = Decimal(MAX_PICOS).scaleb(-12)
_SHOWN_COLUMNS: Final = 40


class InvalidRows(InvalidReport):
    """A recognised export with rows that cannot be read; ``problems`` name their rows."""


class _Problem(ValueError):
    pass


_Row = Mapping[str, str | None]
"""One data row: column → its text without surrounding blanks, ``None`` when blank."""


# --- reading one value ---------------------------------------------------------------------


def _whole(row: _Row, column: str, maximum: int) -> int | None:
    text = row.get(column)
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _Problem(f"{column}: not a number: {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value() or not 0 <= value <= maximum:
        raise _Problem(f"{column}: expected a whole number from 0 to {maximum}, got {text!r}")
    return int(value)


def _count(row: _Row, column: str) -> int | None:
    return _whole(row, column, MAX_COUNT)


def _sum(*counts: int | None) -> int | None:
    present = [count for count in counts if count is not None]
    return sum(present) if present else None


def _text(row: _Row, column: str, limit: int = 200) -> str | None:
    value = row.get(column)
    if value is not None and len(value) > limit:
        raise _Problem(f"{column}: at most {limit} characters, got {len(value)}")
    return value


def _usd_picos(row: _Row, column: str) -> int:
    text = row.get(column)
    if text is None:
        raise _Problem(f"{column}: no amount")
    try:
        amount = parse_usd(text)
    except ValueError as error:
        raise _Problem(f"{column}: {error}") from None
    if abs(amount) > _MAX_USD:
        raise _Problem(f"{column}: {text!r} is out of range")
    return to_picos(amount)


def _unix_ms(row: _Row, column: str) -> int:
    seconds = _whole(row, column, MAX_UNIX_SECONDS)
    if seconds is None:
        raise _Problem(f"{column}: no time (Unix seconds)")
    return seconds * 1000


def _utc_bucket(row: _Row, column: str) -> tuple[int, int]:
    """A day for a date; an hour (or a minute) for a date and time."""
    text = row.get(column)
    if text is None:
        raise _Problem(f"{column}: no date")
    try:
        start = from_iso(text)
    except ValueError as error:
        raise _Problem(f"{column}: {error}") from None
    if not any(mark in text for mark in "T :"):
        width = _DAY_MS
    elif start % _HOUR_MS == 0:
        width = _HOUR_MS
    else:
        width = _MINUTE_MS
    if start < 0 or start + width > MAX_UNIX_SECONDS * 1000:
        raise _Problem(f"{column}: {text!r} is out of range")
    return start, start + width


_DISPLAY_DATE: Final = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})$")


def anthropic_model_id(name: str | None) -> str | None:
    """The model id a Console display name spells: ``Claude 3.5 Sonnet 2024-10-22`` →
    ``claude-3-5-sonnet-20241022``, ``Claude Sonnet 4.5`` → ``claude-sonnet-4-5``; an id is
    kept as it is."""
    if name is None or not any(c.isspace() or c.isupper() for c in name):
        return name
    dated = _DISPLAY_DATE.sub(r"\1\2\3", name.strip())
    return re.sub(r"[\s.]+", "-", dated.lower())


# --- the exports ---------------------------------------------------------------------------


def _openai_cost(row: _Row) -> dict[str, Any]:
    currency = row.get("amount_currency")
    if currency is None or currency.upper() != "USD":
        raise _Problem(f"amount_currency: only USD amounts can be imported, got {currency!r}")
    line_item = _text(row, "line_item", 300)
    return {
        "bucket_start_ms": _unix_ms(row, "start_time"),
        "bucket_end_ms": _unix_ms(row, "end_time"),
        "model": openai_line_item_model(line_item),
        "line_item": line_item,
        "project_id": _text(row, "project_id"),
        "api_key_id": _text(row, "api_key_id"),
        "user_id": _text(row, "user_id"),
        "cost_picos": _usd_picos(row, "amount_value"),
    }


def _openai_usage(row: _Row) -> dict[str, Any]:
    return {
        "bucket_start_ms": _unix_ms(row, "start_time"),
        "bucket_end_ms": _unix_ms(row, "end_time"),
        "model": _text(row, "model"),
        "project_id": _text(row, "project_id"),
        "api_key_id": _text(row, "api_key_id"),
        "user_id": _text(row, "user_id"),
        "input_tokens": _count(row, "input_tokens"),
        "output_tokens": _count(row, "output_tokens"),
        "cache_read_tokens": _count(row, "input_cached_tokens"),
        "requests": _count(row, "num_model_requests"),
    }


def _anthropic_key(row: _Row) -> str | None:
    return _text(row, "api_key_id") or _text(row, "api_key")


def _anthropic_usage(row: _Row) -> dict[str, Any]:
    start, end = _utc_bucket(row, "usage_date_utc")
    uncached = _count(row, "usage_input_tokens_no_cache")
    cache_read = _count(row, "usage_input_tokens_cache_read")
    cache_write = _sum(
        _count(row, "usage_input_tokens_cache_write_5m"),
        _count(row, "usage_input_tokens_cache_write_1h"),
    )
    return {
        "bucket_start_ms": start,
        "bucket_end_ms": end,
        "model": _text(row, "model_version"),
        "api_key_id": _anthropic_key(row),
        "workspace_id": _text(row, "workspace"),
        "input_tokens": _sum(uncached, cache_read, cache_write),
        "output_tokens": _count(row, "usage_output_tokens"),
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
    }


def _anthropic_cost(row: _Row) -> dict[str, Any]:
    start, end = _utc_bucket(row, "usage_date_utc")
    model = _text(row, "model")
    token_type = _text(row, "token_type")
    line_item = ", ".join(part for part in (model, token_type) if part) or _text(row, "cost_type")
    if line_item is not None and len(line_item) > 300:
        raise _Problem("model, token_type: at most 300 characters together")
    return {
        "bucket_start_ms": start,
        "bucket_end_ms": end,
        "model": anthropic_model_id(model),
        "line_item": line_item,
        "api_key_id": _anthropic_key(row),
        "workspace_id": _text(row, "workspace"),
        "cost_picos": _usd_picos(row, "cost_usd"),
    }


@dataclass(frozen=True, slots=True)
class _Export:
    """One console export of a provider: the columns that recognise it and how to read it."""

    provider: str
    name: str
    kind: str
    required: tuple[str, ...]
    times: frozenset[str]
    """The bucket's columns: a row blank in every other column is a bucket without figures."""
    group: tuple[str, ...]
    read: Callable[[_Row], dict[str, Any]]


_OPENAI_TIMES: Final = frozenset({"start_time", "end_time", "start_time_iso", "end_time_iso"})
_ANTHROPIC_TIMES: Final = frozenset({"usage_date_utc"})
_OPENAI_COST: Final = _Export(
    provider="openai",
    name="cost export",
    kind="cost",
    required=("start_time", "end_time", "amount_value", "amount_currency"),
    times=_OPENAI_TIMES,
    group=(
        "line_item",
        "project_id",
        "api_key_id",
        "user_id",
        "organization_id",
        "amount_currency",
        "quantity_unit",
        "api_source",
    ),
    read=_openai_cost,
)
_OPENAI_USAGE: Final = _Export(
    provider="openai",
    name="activity (usage) export",
    kind="usage",
    required=("start_time", "end_time", "input_tokens"),
    times=_OPENAI_TIMES,
    group=("model", "project_id", "user_id", "api_key_id", "batch", "service_tier"),
    read=_openai_usage,
)
_ANTHROPIC_USAGE: Final = _Export(
    provider="anthropic",
    name="usage export",
    kind="usage",
    required=(
        "usage_date_utc",
        "model_version",
        "usage_input_tokens_no_cache",
        "usage_output_tokens",
    ),
    times=_ANTHROPIC_TIMES,
    group=(
        "model_version",
        "api_key",
        "api_key_id",
        "workspace",
        "usage_type",
        "context_window",
        "inference_geo",
        "speed",
    ),
    read=_anthropic_usage,
)
_ANTHROPIC_COST: Final = _Export(
    provider="anthropic",
    name="cost export",
    kind="cost",
    required=("usage_date_utc", "cost_usd"),
    times=_ANTHROPIC_TIMES,
    group=(
        "model",
        "token_type",
        "cost_type",
        "workspace",
        "api_key",
        "api_key_id",
        "usage_type",
        "context_window",
        "inference_geo",
        "speed",
    ),
    read=_anthropic_cost,
)
_EXPORTS: Final[Mapping[str, Sequence[_Export]]] = {
    "openai": (_OPENAI_COST, _OPENAI_USAGE),
    "anthropic": (_ANTHROPIC_USAGE, _ANTHROPIC_COST),
}
_NAMES: Final = {"openai": "OpenAI", "anthropic": "Anthropic"}


def _shown(header: Sequence[str]) -> str:
    names = [name if len(name) <= 60 else name[:60] + "…" for name in header[:_SHOWN_COLUMNS]]
    return ", ".join(names) + (", …" if len(header) > _SHOWN_COLUMNS else "")


def _recognise(provider: str, header: Sequence[str]) -> _Export:
    columns = set(header)
    for export in _EXPORTS[provider]:
        if columns >= set(export.required):
            return export
    if provider == "openai" and {"start_time", "end_time"} <= columns <= _OPENAI_TIMES:
        return _OPENAI_USAGE  # an activity export of periods without usage
    missing = "; ".join(
        f"the {export.name} needs {', '.join(c for c in export.required if c not in columns)}"
        for export in _EXPORTS[provider]
    )
    others = [
        (other, export.name)
        for other in PROVIDERS
        if other != provider
        for export in _EXPORTS[other]
        if columns >= set(export.required)
    ]
    hint = "".join(
        f" (it looks like an {_NAMES[other]} {name}: import it as {other})"
        for other, name in others[:1]
    )
    raise InvalidReport(
        [
            f"not an {_NAMES[provider]} console export: {missing}; the header has "
            f"{_shown(header) or 'no columns'}{hint}"
        ]
    )


# --- reading an export ---------------------------------------------------------------------


def _decode(data: bytes | str, charset: str | None) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    encoding = (charset or "utf-8").strip().strip('"').lower()
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise InvalidReport([f"unknown charset {encoding!r}"]) from None
    name = "utf-8-sig" if codec.name == "utf-8" else codec.name
    try:
        return data.decode(name)
    except UnicodeDecodeError as error:
        raise InvalidReport(
            [f"the CSV is not {encoding} text (byte {error.start}): export it as UTF-8"]
        ) from None


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _records(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Data rows with their row number (the header is row 1), blank lines left out."""
    for number, fields in enumerate(reader, start=2):
        if any(field.strip() for field in fields):
            yield number, fields


def read_csv(
    provider: str, data: bytes | str, *, charset: str | None = None
) -> list[ReportedResult]:
    """Every result of ``provider``'s console export ``data`` (a CSV file's bytes, UTF-8 unless
    ``charset`` says otherwise).

    Raises :class:`InvalidReport` for a file that is not one of the provider's exports, and
    :class:`InvalidRows` listing every row that cannot be read; nothing is read partially.
    """
    if provider not in _EXPORTS:
        raise InvalidReport([f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}"])
    text = _decode(data, charset)
    if "\x00" in text:
        raise InvalidReport(["the CSV must not contain NUL (U+0000)"])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    results: list[ReportedResult] = []
    problems: list[str] = []
    try:
        first = next(reader, None)
        header = [name.strip() for name in first or ()]
        if not any(header):
            raise InvalidReport(["the CSV is empty: expected a header row naming its columns"])
        repeated = sorted(name for name, n in Counter(header).items() if name and n > 1)
        if repeated:
            raise InvalidReport([f"the header names {', '.join(repeated)} more than once"])
        export = _recognise(provider, header)
        seen: dict[tuple[object, ...], int] = {}
        for number, fields in _records(reader):
            if len(fields) < len(header) or any(f.strip() for f in fields[len(header) :]):
                problems.append(
                    f"row {number}: {len(fields)} fields, the header names {len(header)}"
                )
                continue
            row = {
                name: (value.strip() or None)
                for name, value in zip(header, fields[: len(header)], strict=True)
            }
            if all(value is None for name, value in row.items() if name not in export.times):
                continue  # a bucket without figures
            try:
                figures = export.read(row)
            except _Problem as problem:
                problems.append(f"row {number}: {problem}")
                continue
            group = {name: row[name] for name in export.group if row.get(name) is not None}
            bucket = [
                f"{provider}-console-{export.kind}",
                figures["bucket_start_ms"],
                figures["bucket_end_ms"],
                group,
            ]
            identity = (figures["bucket_start_ms"], figures["bucket_end_ms"], *group.items())
            occurrence = seen.get(identity, 0)
            seen[identity] = occurrence + 1
            results.append(
                ReportedResult(
                    kind=export.kind,
                    natural_key=hashlib.sha256(
                        _canonical([*bucket, occurrence]).encode()
                    ).hexdigest(),
                    raw=_canonical(row),
                    **figures,
                )
            )
    except csv.Error as error:
        raise InvalidReport([f"not a CSV file (line {reader.line_num}): {error}"]) from None
    if problems:
        raise InvalidRows(problems)
    return results


def looks_like_csv(name: str, head: bytes) -> bool:
    """Whether a file is a CSV export rather than a JSON report: by its extension, else by its
    content (JSON opens with ``{`` or ``[``)."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return True
    if lowered.endswith(".json"):
        return False
    start = head.removeprefix(codecs.BOM_UTF8).lstrip()
    return not start.startswith((b"{", b"[")) and b"," in start.split(b"\n", 1)[0]
