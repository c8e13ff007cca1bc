"""Economic events as FinOps FOCUS 1.2 cost and usage rows.

One row per event, with the FOCUS columns a FinOps tool needs to load AI spend beside cloud
bills, and P402's own figures in ``x_``-prefixed columns (the FOCUS convention for custom
columns):

- cost: ``BilledCost`` = ``EffectiveCost`` = ``ContractedCost`` = ``ListCost`` = the
  event's cost (P402 prices at request time from the public price data, or at the tenant's
  negotiated rates when they apply, and keeps no second figure), ``BillingCurrency`` and
  ``PricingCurrency`` ``USD``; an unpriced event leaves them empty (never 0) and says
  ``x_CostEvidence`` = ``unpriced``;
- usage: ``ConsumedQuantity`` = ``PricingQuantity`` = input + output tokens (cache and
  reasoning tokens are inside those totals, broken down in ``x_*Tokens``),
  ``ConsumedUnit`` = ``PricingUnit`` = ``Tokens``;
- periods: ``ChargePeriodStart``/``End`` the UTC day of the event (its exact time is
  ``x_Timestamp``), ``BillingPeriodStart``/``End`` its UTC calendar month;
- who: ``ProviderName`` / ``InvoiceIssuerName`` the provider billed, ``PublisherName`` the
  model's maker, ``ServiceName``, ``ServiceCategory`` ``AI and Machine Learning``,
  ``ServiceSubcategory`` ``Generative AI``, ``ResourceId`` / ``SkuId`` ``provider/model``,
  ``BillingAccountId`` / ``Name`` the P402 tenant; the owners as ``x_Department`` … and as
  FOCUS ``Tags``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from p402.instrumentation.vocabulary import OWNER_DIMENSIONS
from p402.ledger.clock import from_iso
from p402.ledger.rollups import DAY_MS

__all__ = ["FOCUS_COLUMNS", "focus_row"]

_OWNER_COLUMNS: Final = {
    dimension: "x_" + "".join(part.capitalize() for part in dimension.split("_"))
    for dimension in OWNER_DIMENSIONS
}
_EXTRA_COLUMNS: Final = {
    "x_EventId": "id",
    "x_Timestamp": "timestamp",
    "x_Operation": "operation",
    "x_ModelRequested": "model_requested",
    "x_ModelUsed": "model_used",
    "x_InputTokens": "input_tokens",
    "x_OutputTokens": "output_tokens",
    "x_CacheReadTokens": "cache_read_tokens",
    "x_CacheWriteTokens": "cache_write_tokens",
    "x_ReasoningTokens": "reasoning_tokens",
    "x_CostEvidence": "cost_evidence",
    "x_UsageEvidence": "usage_evidence",
    "x_PriceVersion": "price_version",
    "x_PolicyResult": "policy_result",
    "x_Outcome": "outcome",
    "x_ReceiptId": "receipt_id",
    "x_EvidenceStatus": "evidence_status",
}

FOCUS_COLUMNS: Final = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingCategory",
    "PricingCurrency",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuPriceId",
    "Tags",
    *_EXTRA_COLUMNS,
    *_OWNER_COLUMNS.values(),
)
"""The columns of a FOCUS export, in order."""

_PROVIDERS: Final = {
    # gen_ai.provider.name → (ProviderName, ServiceName)
    "openai": ("OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Claude API"),
    "azure.ai.openai": ("Microsoft", "Azure OpenAI"),
    "gcp.gemini": ("Google", "Gemini API"),
    "gcp.vertex_ai": ("Google Cloud", "Vertex AI"),
    "aws.bedrock": ("Amazon Web Services", "Amazon Bedrock"),
    "openrouter": ("OpenRouter", "OpenRouter"),
}
_PUBLISHERS: Final = (
    # model name prefix → the model's maker, for providers that host others' models
    ("gpt-", "OpenAI"),
    ("o1", "OpenAI"),
    ("o3", "OpenAI"),
    ("o4", "OpenAI"),
    ("text-embedding-", "OpenAI"),
    ("claude", "Anthropic"),
    ("anthropic.", "Anthropic"),
    ("gemini", "Google"),
    ("llama", "Meta"),
    ("meta.", "Meta"),
    ("mistral", "Mistral AI"),
    ("command", "Cohere"),
    ("deepseek", "DeepSeek"),
)


def _publisher(provider_name: str, model: str | None) -> str:
    vendor, _, name = (model or "").lower().rpartition("/")  # OpenRouter: "vendor/model"
    for prefix, publisher in _PUBLISHERS:
        if name.startswith(prefix):
            return publisher
    return vendor.capitalize() if vendor else provider_name


def _focus_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=64)
def _periods(day_start_ms: int) -> tuple[str, str, str, str]:
    """Charge period (the UTC day) and billing period (its calendar month), FOCUS-formatted."""
    day = datetime.fromtimestamp(day_start_ms / 1000, tz=UTC)
    month_start = datetime(day.year, day.month, 1, tzinfo=UTC)
    month_end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
    return (
        _focus_time(day_start_ms),
        _focus_time(day_start_ms + DAY_MS),
        _focus_time(int(month_start.timestamp() * 1000)),
        _focus_time(int(month_end.timestamp() * 1000)),
    )


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def focus_row(event: Mapping[str, Any], account_id: str, account_name: str) -> list[str]:
    """One event (its API JSON) as a FOCUS row, cells in :data:`FOCUS_COLUMNS` order."""
    provider = event["provider"] or ""
    provider_name, service_name = _PROVIDERS.get(provider, (provider, provider))
    model = event["model_used"] or event["model_requested"]
    ts_ms = from_iso(event["timestamp"])
    charge_start, charge_end, billing_start, billing_end = _periods(ts_ms - ts_ms % DAY_MS)
    input_tokens, output_tokens = event["input_tokens"], event["output_tokens"]
    measured = input_tokens is not None or output_tokens is not None
    quantity = (input_tokens or 0) + (output_tokens or 0) if measured else None
    cost = event["cost_usd"]
    sku = f"{provider}/{model}" if model else None
    price = f"{sku}@{event['price_version']}" if sku and event["price_version"] else sku
    owners = {d: event[d] for d in OWNER_DIMENSIONS if event[d] is not None}
    description = (
        f"{event['operation'] or 'call'} {model or 'unknown model'}: "
        f"{_cell(input_tokens) or '?'} input, {_cell(output_tokens) or '?'} output tokens"
    )
    cells: dict[str, object] = {
        "BilledCost": cost,
        "BillingAccountId": account_id,
        "BillingAccountName": account_name,
        "BillingCurrency": "USD",
        "BillingPeriodStart": billing_start,
        "BillingPeriodEnd": billing_end,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": description,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": charge_start,
        "ChargePeriodEnd": charge_end,
        "ConsumedQuantity": quantity,
        "ConsumedUnit": "Tokens" if measured else None,
        "ContractedCost": cost,
        "EffectiveCost": cost,
        "InvoiceIssuerName": provider_name,
        "ListCost": cost,
        "PricingCategory": "Standard",
        "PricingCurrency": "USD",
        "PricingQuantity": quantity,
        "PricingUnit": "Tokens" if measured else None,
        "ProviderName": provider_name,
        "PublisherName": _publisher(provider_name, model),
        "ResourceId": sku,
        "ResourceName": model,
        "ResourceType": "Model" if model else None,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": service_name,
        "ServiceSubcategory": "Generative AI",
        "SkuId": sku,
        "SkuPriceId": price,
        "Tags": json.dumps(owners, sort_keys=True) if owners else None,
        **{column: event[field] for column, field in _EXTRA_COLUMNS.items()},
        **{column: event[dimension] for dimension, column in _OWNER_COLUMNS.items()},
    }
    return [_cell(cells[column]) for column in FOCUS_COLUMNS]
