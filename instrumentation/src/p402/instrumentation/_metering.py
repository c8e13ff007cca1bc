"""Turning one HTTP exchange with an LLM provider into one economic-event span.

:class:`Meter` decides whether a request is metered (its URL maps to a provider route and
the format knows the path) and opens an :class:`Exchange` for it; the exchange closes its
span once the response body has been read, the stream ended, or the request failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from p402.instrumentation.config import P402Config
from p402.instrumentation.formats import (
    FORMATS,
    Endpoint,
    ExchangeFormat,
    Message,
    RequestFacts,
    ResponseFacts,
    StreamAccumulator,
)
from p402.instrumentation.formats.openai import CHAT_COMPLETIONS, is_usage_only_chunk
from p402.instrumentation.ids import new_event_id
from p402.instrumentation.money import usd_str
from p402.instrumentation.owner import current_owner
from p402.instrumentation.pricing import compute_cost, price_version
from p402.instrumentation.privacy import ContentPolicy
from p402.instrumentation.providers import ProviderRegistry, ProviderRoute
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import (
    COST_CURRENCY_USD,
    ERROR_TYPE,
    GEN_AI_CONVERSATION_ID,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_COST_AMOUNT,
    GEN_AI_USAGE_COST_CURRENCY,
    GEN_AI_USAGE_COST_SOURCE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    HTTP_RESPONSE_STATUS_CODE,
    P402_ATTEMPT,
    P402_COST_EVIDENCE,
    P402_EVENT_ID,
    P402_EVENT_SIGNATURE,
    P402_POLICY_RESULT,
    P402_PRICE_VERSION,
    P402_PRIVACY_MODE,
    P402_USAGE_EVIDENCE,
    SERVER_ADDRESS,
    SERVER_PORT,
    ApiFormat,
    CostEvidence,
    CostSource,
    PolicyResult,
    UsageEvidence,
    owner_attribute,
)

__all__ = ["Exchange", "Meter"]

RETRY_COUNT_HEADER = "x-stainless-retry-count"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpRequest(Protocol):
    """The part of an ``httpx`` / ``httpx2`` request the meter reads and may change."""

    @property
    def url(self) -> Any: ...
    @property
    def headers(self) -> Any: ...
    @property
    def content(self) -> bytes: ...


def load_json(data: bytes) -> Mapping[str, Any] | None:
    """A JSON object with exact decimals, or ``None`` when ``data`` is not one."""
    try:
        value = json.loads(data, parse_float=Decimal)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


def _request_body(request: HttpRequest) -> Mapping[str, Any]:
    try:
        content = request.content
    except Exception:  # a streaming request body that has not been read: nothing to inspect
        return {}
    if not content:
        return {}
    return load_json(content) or {}


def replace_request_body(request: Any, body: Mapping[str, Any]) -> None:
    """Send ``body`` (JSON) instead of the request's own, with a matching Content-Length."""
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    module = sys.modules[type(request).__module__.split(".")[0]]
    request._content = data
    request.stream = module.ByteStream(data)
    request.headers["content-length"] = str(len(data))


def _asks_for_stream_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _attempt(headers: Mapping[str, str]) -> int:
    value = headers.get(RETRY_COUNT_HEADER)
    return int(value) if value is not None and value.isdigit() else 0


class Meter:
    """Opens an :class:`Exchange` for each metered request; ``None`` for everything else."""

    def __init__(self, config: P402Config, tracer: Tracer, content: ContentPolicy) -> None:
        self.config = config
        self.tracer = tracer
        self.content = content
        self.registry = ProviderRegistry(config.providers)

    def begin(self, request: HttpRequest) -> Exchange | None:
        url = request.url
        route = self.registry.match(str(url), url.host, url.path)
        if route is None:
            return None
        exchange_format = FORMATS.get(route.format)
        if exchange_format is None:
            return None
        endpoint = exchange_format.endpoint(url.path)
        if endpoint is None:
            return None
        body = _request_body(request)
        facts = exchange_format.request_facts(endpoint, url.path, body)
        # Owner context never travels to a provider, not even through OTel baggage.
        if "baggage" in request.headers:
            del request.headers["baggage"]
        hide_event = None
        if (
            facts.stream
            and endpoint is CHAT_COMPLETIONS
            and route.format is ApiFormat.OPENAI
            and self.config.include_stream_usage
            and not _asks_for_stream_usage(body)
        ):
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            replace_request_body(
                request, {**body, "stream_options": {**options, "include_usage": True}}
            )
            hide_event = is_usage_only_chunk
        exchange = Exchange(self, route, exchange_format, endpoint, facts, request)
        exchange.hide_event = hide_event
        if self.content.captures_content:
            exchange.inputs = exchange_format.input_messages(endpoint, body)
        return exchange


class Exchange:
    """One metered HTTP attempt and its span, from request to the end of the response."""

    __slots__ = (
        "_ended",
        "endpoint",
        "format",
        "hide_event",
        "inputs",
        "meter",
        "request_facts",
        "route",
        "span",
        "started_at",
    )

    def __init__(
        self,
        meter: Meter,
        route: ProviderRoute,
        exchange_format: ExchangeFormat,
        endpoint: Endpoint,
        facts: RequestFacts,
        request: HttpRequest,
    ) -> None:
        self.meter = meter
        self.route = route
        self.format = exchange_format
        self.endpoint = endpoint
        self.request_facts = facts
        self._ended = False
        self.hide_event: Callable[[Any], bool] | None = None
        self.inputs: list[Message] = []
        started_ns = time.time_ns()
        self.started_at = datetime.fromtimestamp(started_ns / 1e9, tz=UTC)
        url = request.url
        attributes: dict[str, Any] = {
            P402_EVENT_ID: new_event_id(),
            GEN_AI_OPERATION_NAME: endpoint.operation.value,
            GEN_AI_PROVIDER_NAME: route.name,
            GEN_AI_REQUEST_STREAM: facts.stream,
            SERVER_ADDRESS: url.host,
            SERVER_PORT: url.port or _DEFAULT_PORTS.get(url.scheme, 0),
            P402_ATTEMPT: _attempt(request.headers),
            P402_PRIVACY_MODE: meter.config.privacy_mode.value,
            P402_POLICY_RESULT: PolicyResult.ALLOWED.value,
        }
        if facts.model:
            attributes[GEN_AI_REQUEST_MODEL] = facts.model
        if facts.max_tokens is not None:
            attributes[GEN_AI_REQUEST_MAX_TOKENS] = facts.max_tokens
        owners = {**meter.config.owner_defaults, **current_owner()}
        for dimension, value in owners.items():
            attributes[owner_attribute(dimension)] = value
        if "session" in owners:
            attributes[GEN_AI_CONVERSATION_ID] = owners["session"]
        name = f"{endpoint.operation.value} {facts.model}" if facts.model else endpoint.operation
        self.span: Span = meter.tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, start_time=started_ns
        )

    @property
    def captures_content(self) -> bool:
        return self.meter.content.captures_content

    def finish_with_body(self, status_code: int, body: bytes) -> None:
        """Close the event from a complete, decoded response body."""
        parsed = load_json(body) if status_code < 400 else None
        facts = self.format.response_facts(self.endpoint, parsed) if parsed else None
        outputs = (
            self.format.output_messages(self.endpoint, parsed)
            if parsed and self.captures_content
            else []
        )
        self.finish(status_code, facts, UsageEvidence.PROVIDER_RESPONSE, outputs)

    def finish_stream(
        self, status_code: int, accumulator: StreamAccumulator, *, complete: bool
    ) -> None:
        """Close the event from what a stream delivered before it ended or was closed."""
        final = complete or accumulator.finished
        outputs = accumulator.output_messages() if self.captures_content else []
        evidence = UsageEvidence.STREAM_FINAL if final else UsageEvidence.STREAM_INCOMPLETE
        self.finish(status_code, accumulator.facts(), evidence, outputs)

    def finish(
        self,
        status_code: int | None,
        facts: ResponseFacts | None,
        evidence: UsageEvidence,
        outputs: list[Message] | None = None,
    ) -> None:
        """Record the outcome and end the span; later calls do nothing."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        usage = facts.usage if facts else TokenUsage()
        if status_code is not None:
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status_code)
            if status_code >= 400:
                span.set_attribute(ERROR_TYPE, str(status_code))
                span.set_status(StatusCode.ERROR)
        if facts:
            if facts.model:
                span.set_attribute(GEN_AI_RESPONSE_MODEL, facts.model)
            if facts.response_id:
                span.set_attribute(GEN_AI_RESPONSE_ID, facts.response_id)
            if facts.finish_reasons:
                span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, facts.finish_reasons)
        if not usage.measured and evidence is not UsageEvidence.STREAM_INCOMPLETE:
            evidence = UsageEvidence.MISSING
        span.set_attribute(P402_USAGE_EVIDENCE, evidence.value)
        for key, count in (
            (GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
            (GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
            (GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
            (GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, usage.cache_write_tokens),
            (GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
        ):
            if count is not None:
                span.set_attribute(key, count)
        self._record_cost(usage, facts, evidence)
        content = self.meter.content
        if content.captures_content:
            span.set_attributes(content.attributes(self.inputs, outputs or []))
        if content.signs_events:
            signature = content.sign(getattr(span, "attributes", None) or {})
            span.set_attribute(P402_EVENT_SIGNATURE, signature)
        span.end()

    def fail(self, error: BaseException) -> None:
        """The request raised before a complete response: no usage, the error's type."""
        if self._ended:
            return
        self.span.set_attribute(ERROR_TYPE, type(error).__qualname__)
        self.span.set_status(StatusCode.ERROR, str(error))
        self.finish(None, None, UsageEvidence.MISSING)

    def _record_cost(
        self, usage: TokenUsage, facts: ResponseFacts | None, usage_evidence: UsageEvidence
    ) -> None:
        span = self.span
        span.set_attribute(P402_PRICE_VERSION, price_version())
        if usage_evidence is UsageEvidence.STREAM_INCOMPLETE:
            # A partial count would understate what the provider bills: no cost at all.
            span.set_attribute(P402_COST_EVIDENCE, CostEvidence.UNPRICED.value)
            return
        if facts is not None and facts.provider_cost is not None:
            cost: Decimal | None = facts.provider_cost
            source, evidence = CostSource.PROVIDER, CostEvidence.PROVIDER_REPORTED
        else:
            model = (facts.model if facts else None) or self.request_facts.model
            cost = (
                compute_cost(usage, model=model, provider=self.route.name, at=self.started_at)
                if model
                else None
            )
            source, evidence = CostSource.LOCAL, CostEvidence.COMPUTED
        if cost is None:
            span.set_attribute(P402_COST_EVIDENCE, CostEvidence.UNPRICED.value)
            return
        span.set_attribute(P402_COST_EVIDENCE, evidence.value)
        span.set_attribute(GEN_AI_USAGE_COST_AMOUNT, usd_str(cost))
        span.set_attribute(GEN_AI_USAGE_COST_CURRENCY, COST_CURRENCY_USD)
        span.set_attribute(GEN_AI_USAGE_COST_SOURCE, source.value)
