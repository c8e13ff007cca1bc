"""Turning one HTTP exchange with an LLM provider into one economic-event span.

:class:`Meter` decides whether a request is metered (its URL maps to a provider route and the
format knows the path) and opens an :class:`Exchange` for it. On the application's path an
exchange only notes what it needs (times, owners, the trace it belongs to, the bodies), and
reads the request before it leaves only when it must change it (adding
``stream_options.include_usage``). Everything else, from parsing to pricing to building the
span, runs on the :class:`~p402.instrumentation._recorder.Recorder` thread once the response
has been read, the stream has ended, or the request has failed.

With enforcement on, the meter hands each exchange to the
:class:`~p402.instrumentation.enforcement.Enforcer` before the request leaves: it may rewrite
the request's model, or refuse the call (``Exchange.refusal``, a synthetic 402 response that
the client hook returns instead of sending).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context

from p402.instrumentation._pipeline import EventSink
from p402.instrumentation._recorder import Recorder
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
    P402_MODEL_ORIGINAL,
    P402_POLICY_REASON,
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

if TYPE_CHECKING:
    from p402.instrumentation.enforcement import Enforcer

__all__ = ["Exchange", "Meter", "load_json", "replace_request_body"]

RETRY_COUNT_HEADER = "x-stainless-retry-count"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STREAM_FLAG = b'"stream"'
_USAGE_ASKED = (b'"include_usage":true', b'"include_usage": true')


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


def _request_content(request: HttpRequest) -> bytes:
    try:
        return request.content
    except Exception:  # a streaming request body that has not been read: nothing to inspect
        return b""


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

    def __init__(
        self,
        config: P402Config,
        sink: EventSink,
        content: ContentPolicy,
        recorder: Recorder,
        enforcer: Enforcer | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.content = content
        self.recorder = recorder
        self.enforcer = enforcer
        self.registry = ProviderRegistry(config.providers)
        self.price_version = price_version()

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
        headers = request.headers
        # Owner context never travels to a provider, not even through OTel baggage.
        if "baggage" in headers:
            del headers["baggage"]
        exchange = Exchange(self, route, exchange_format, endpoint, url, headers)
        content = _request_content(request)
        if (
            endpoint is CHAT_COMPLETIONS
            and route.format is ApiFormat.OPENAI
            and self.config.include_stream_usage
            and _STREAM_FLAG in content
            and not any(flag in content for flag in _USAGE_ASKED)
        ):
            body = load_json(content) or {}
            if body.get("stream") is True and not _asks_for_stream_usage(body):
                options = body.get("stream_options")
                options = dict(options) if isinstance(options, Mapping) else {}
                body = {**body, "stream_options": {**options, "include_usage": True}}
                replace_request_body(request, body)
                exchange.hide_event = is_usage_only_chunk
            exchange.request_body = body
        exchange.request_content = content
        if self.enforcer is not None:
            self.enforcer.apply(exchange, request, content)
        return exchange


class Exchange:
    """One metered HTTP attempt: noted on the application's path, recorded off it."""

    __slots__ = (
        "_ended",
        "attempt",
        "ended_ns",
        "endpoint",
        "event_id",
        "format",
        "hide_event",
        "meter",
        "model_original",
        "owners",
        "parent",
        "path",
        "policy_reason",
        "policy_result",
        "port",
        "refusal",
        "request_body",
        "request_content",
        "reservation",
        "route",
        "server",
        "started_ns",
    )

    def __init__(
        self,
        meter: Meter,
        route: ProviderRoute,
        exchange_format: ExchangeFormat,
        endpoint: Endpoint,
        url: Any,
        headers: Mapping[str, str],
    ) -> None:
        self.started_ns = time.time_ns()
        self.meter = meter
        self.route = route
        self.format = exchange_format
        self.endpoint = endpoint
        self.parent = context.get_current()
        self.owners = current_owner()
        self.attempt = _attempt(headers)
        self.server = url.host
        self.path = url.path
        self.port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        self.hide_event: Callable[[Any], bool] | None = None
        self.request_body: Mapping[str, Any] | None = None
        self.request_content = b""
        self.ended_ns: int | None = None
        """When the response ended, if that was noted before the exchange is finished."""
        self._ended = False
        # Set by enforcement before the request leaves.
        self.event_id: str | None = None
        self.policy_result = PolicyResult.ALLOWED
        self.policy_reason: str | None = None
        self.model_original: str | None = None
        self.refusal: Any = None
        """The synthetic 402 response of a refused call, returned instead of sending it."""
        self.reservation: Any = None
        """This call's share of the budgets, counted locally until its cost is known."""

    @property
    def captures_content(self) -> bool:
        return self.meter.content.captures_content

    def refuse(self) -> Any:
        """Record the refused call (no usage, no cost) and give its 402 response."""
        self.finish_unread(self.refusal.status_code)
        return self.refusal

    def finish_with_body(self, status_code: int, body: bytes) -> None:
        """The response body was read in full."""
        if self._end():
            self._record(self._from_body, status_code, body)

    def finish_stream(
        self, status_code: int, accumulator: StreamAccumulator, *, complete: bool
    ) -> None:
        """A stream ended, was closed early, or failed."""
        if self._end():
            self._record(self._from_stream, status_code, accumulator, complete)

    def finish_unread(self, status_code: int) -> None:
        """The body could not be read for metering: no usage."""
        if self._end():
            self._record(self._complete, status_code, None, UsageEvidence.MISSING, [])

    def fail(self, error: BaseException) -> None:
        """The request raised before a complete response: no usage, the error's type."""
        if self._end():
            error_type = type(error).__qualname__
            self._record(self._complete, None, None, UsageEvidence.MISSING, [], error_type)

    def _end(self) -> bool:
        if self._ended:
            return False
        self._ended = True
        return True

    def _record(self, step: Callable[..., None], *args: Any) -> None:
        self.meter.recorder.submit(partial(step, self.ended_ns or time.time_ns(), *args))

    # --- on the recorder thread ------------------------------------------------------------

    def _from_body(self, ended_ns: int, status_code: int, body: bytes) -> None:
        parsed = load_json(body) if status_code < 400 else None
        facts = self.format.response_facts(self.endpoint, parsed) if parsed else None
        outputs = (
            self.format.output_messages(self.endpoint, parsed)
            if parsed and self.captures_content
            else []
        )
        self._complete(ended_ns, status_code, facts, UsageEvidence.PROVIDER_RESPONSE, outputs)

    def _from_stream(
        self, ended_ns: int, status_code: int, accumulator: StreamAccumulator, complete: bool
    ) -> None:
        final = complete or accumulator.finished
        outputs = accumulator.output_messages() if self.captures_content else []
        evidence = UsageEvidence.STREAM_FINAL if final else UsageEvidence.STREAM_INCOMPLETE
        self._complete(ended_ns, status_code, accumulator.facts(), evidence, outputs)

    def _request_facts(self) -> tuple[RequestFacts, Mapping[str, Any]]:
        body = self.request_body
        if body is None:
            body = (load_json(self.request_content) if self.request_content else None) or {}
        return self.format.request_facts(self.endpoint, self.path, body), body

    def _complete(
        self,
        ended_ns: int,
        status_code: int | None,
        facts: ResponseFacts | None,
        evidence: UsageEvidence,
        outputs: list[Message],
        error_type: str | None = None,
    ) -> None:
        meter = self.meter
        request, body = self._request_facts()
        attributes: dict[str, Any] = {
            P402_EVENT_ID: self.event_id or new_event_id(),
            GEN_AI_OPERATION_NAME: self.endpoint.operation.value,
            GEN_AI_PROVIDER_NAME: self.route.name,
            GEN_AI_REQUEST_STREAM: request.stream,
            SERVER_ADDRESS: self.server,
            SERVER_PORT: self.port,
            P402_ATTEMPT: self.attempt,
            P402_PRIVACY_MODE: meter.config.privacy_mode.value,
            P402_POLICY_RESULT: self.policy_result.value,
            P402_PRICE_VERSION: meter.price_version,
        }
        if self.policy_reason:
            attributes[P402_POLICY_REASON] = self.policy_reason
        if self.model_original:
            attributes[P402_MODEL_ORIGINAL] = self.model_original
        if request.model:
            attributes[GEN_AI_REQUEST_MODEL] = request.model
        if request.max_tokens is not None:
            attributes[GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
        owners = {**meter.config.owner_defaults, **self.owners}
        for dimension, value in owners.items():
            attributes[owner_attribute(dimension)] = value
        if "session" in owners:
            attributes[GEN_AI_CONVERSATION_ID] = owners["session"]

        failed = error_type is not None or (status_code is not None and status_code >= 400)
        if status_code is not None:
            attributes[HTTP_RESPONSE_STATUS_CODE] = status_code
            if status_code >= 400:
                error_type = str(status_code)
        if error_type is not None:
            attributes[ERROR_TYPE] = error_type
        usage = facts.usage if facts else TokenUsage()
        if facts:
            if facts.model:
                attributes[GEN_AI_RESPONSE_MODEL] = facts.model
            if facts.response_id:
                attributes[GEN_AI_RESPONSE_ID] = facts.response_id
            if facts.finish_reasons:
                attributes[GEN_AI_RESPONSE_FINISH_REASONS] = facts.finish_reasons
        if not usage.measured and evidence is not UsageEvidence.STREAM_INCOMPLETE:
            evidence = UsageEvidence.MISSING
        attributes[P402_USAGE_EVIDENCE] = evidence.value
        for key, count in (
            (GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
            (GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
            (GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
            (GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, usage.cache_write_tokens),
            (GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
        ):
            if count is not None:
                attributes[key] = count
        cost = self._cost(usage, facts, evidence, request.model)
        attributes.update(cost)
        if self.reservation is not None and meter.enforcer is not None:
            amount = cost.get(GEN_AI_USAGE_COST_AMOUNT)
            meter.enforcer.settle(self, None if amount is None else Decimal(amount))

        content = meter.content
        if content.captures_content:
            inputs = self.format.input_messages(self.endpoint, body)
            attributes.update(content.attributes(inputs, outputs))
        if content.signs_events:
            attributes[P402_EVENT_SIGNATURE] = content.sign(attributes)

        name = self.endpoint.operation.value
        meter.sink.emit(
            f"{name} {request.model}" if request.model else name,
            self.parent,
            self.started_ns,
            ended_ns,
            attributes,
            failed,
        )

    def _cost(
        self,
        usage: TokenUsage,
        facts: ResponseFacts | None,
        evidence: UsageEvidence,
        requested_model: str | None,
    ) -> dict[str, str]:
        unpriced = {P402_COST_EVIDENCE: CostEvidence.UNPRICED.value}
        if evidence is UsageEvidence.STREAM_INCOMPLETE:
            # A partial count would understate what the provider bills: no cost at all.
            return unpriced
        cost: Decimal | None
        if facts is not None and facts.provider_cost is not None:
            cost = facts.provider_cost
            source, cost_evidence = CostSource.PROVIDER, CostEvidence.PROVIDER_REPORTED
        else:
            model = (facts.model if facts else None) or requested_model
            started = datetime.fromtimestamp(self.started_ns / 1e9, tz=UTC)
            cost = (
                compute_cost(usage, model=model, provider=self.route.name, at=started)
                if model
                else None
            )
            source, cost_evidence = CostSource.LOCAL, CostEvidence.COMPUTED
        if cost is None:
            return unpriced
        return {
            P402_COST_EVIDENCE: cost_evidence.value,
            GEN_AI_USAGE_COST_AMOUNT: usd_str(cost),
            GEN_AI_USAGE_COST_CURRENCY: COST_CURRENCY_USD,
            GEN_AI_USAGE_COST_SOURCE: source.value,
        }
