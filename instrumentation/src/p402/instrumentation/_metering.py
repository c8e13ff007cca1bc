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
from decimal import Decimal
from enum import StrEnum
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Protocol

from opentelemetry import context
from opentelemetry.context import (
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY,
)
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN

from p402.instrumentation._json import load_json
from p402.instrumentation._pipeline import EventSink
from p402.instrumentation._recorder import Recorder
from p402.instrumentation.config import P402Config
from p402.instrumentation.formats import (
    FORMATS,
    Endpoint,
    ExchangeFormat,
    Message,
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
    OWNER_DIMENSIONS,
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
    Operation,
    PolicyResult,
    UsageEvidence,
    owner_attribute,
)

if TYPE_CHECKING:
    from p402.instrumentation.enforcement import Enforcer

__all__ = ["Exchange", "Meter", "header_names", "header_value", "load_json", "replace_request_body"]

RETRY_COUNT_HEADER = b"x-stainless-retry-count"
_BAGGAGE_HEADER = b"baggage"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STREAM_FLAG = b'"stream"'
_SECOND: Final = itemgetter(1)
_USAGE_ASKED = b'"include_usage":true'
_USAGE_ASKED_SPACED = b'"include_usage": true'

# Attribute values as plain strings, looked up once rather than per event.
_VALUES: Final[dict[StrEnum, str]] = {
    member: member.value
    for vocabulary in (Operation, PolicyResult, UsageEvidence)
    for member in vocabulary
}
_OWNER_ATTRIBUTES: Final = {dimension: owner_attribute(dimension) for dimension in OWNER_DIMENSIONS}
_NO_USAGE: Final = TokenUsage()
_UNPRICED: Final = CostEvidence.UNPRICED.value
_COMPUTED: Final = CostEvidence.COMPUTED.value
_PROVIDER_REPORTED: Final = CostEvidence.PROVIDER_REPORTED.value
_LOCAL_SOURCE: Final = CostSource.LOCAL.value
_PROVIDER_SOURCE: Final = CostSource.PROVIDER.value


_Target = tuple[ProviderRoute, ExchangeFormat, Endpoint, str, tuple[str, int]]
"""A metered request's provider route, format, endpoint, URL path and server (host, port)."""
_MAX_TARGETS: Final = 1024


class HttpRequest(Protocol):
    """The part of an ``httpx`` / ``httpx2`` request the meter reads and may change."""

    @property
    def url(self) -> Any: ...
    @property
    def headers(self) -> Any: ...
    @property
    def content(self) -> bytes: ...


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


def header_names(headers: Any) -> list[bytes]:
    """The lowercased names of an ``httpx`` / ``httpx2`` ``Headers``, in order: one pass over
    its items (its ``_list`` of (raw name, lowercased name, value), when it has one), where
    each lookup by name (``in``, ``get``) makes its own."""
    items = getattr(headers, "_list", None)
    if items is None:
        return [name.lower().encode("latin-1") for name in headers]
    return list(map(_SECOND, items))  # in C: no Python step per header


def header_value(headers: Any, names: list[bytes], name: bytes) -> str | None:
    """``headers.get(name)`` (``name`` lowercased), given ``names = header_names(headers)``."""
    if name not in names:
        return None
    items = getattr(headers, "_list", None)
    if items is None or names.count(name) > 1:  # several: values joined as the client does
        value: str | None = headers.get(name.decode())
        return value
    raw: bytes = items[names.index(name)][2]
    return raw.decode(headers.encoding)


def _suppressed(parent: context.Context) -> bool:
    """OpenTelemetry's ``not is_http_instrumentation_enabled()``, read from ``parent``."""
    return bool(
        parent.get(_SUPPRESS_INSTRUMENTATION_KEY)
        or parent.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN)
        or parent.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY)
    )


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
        self.privacy_mode = config.privacy_mode.value
        self.captures_content = content.captures_content
        self.has_owner_defaults = bool(config.owner_defaults)
        self._targets: dict[Any, _Target | None] = {}

    def _target(self, url: Any) -> _Target | None:
        """Where a request to ``url`` goes and which API it is; ``None``: not metered."""
        path = url.path
        route = self.registry.match(str(url), url.host, path)
        if route is None:
            return None
        exchange_format = FORMATS.get(route.format)
        if exchange_format is None:
            return None
        endpoint = exchange_format.endpoint(path)
        if endpoint is None:
            return None
        server = (url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0))
        return route, exchange_format, endpoint, path, server

    def begin(self, request: HttpRequest) -> Exchange | None:
        url = request.url
        # The client's parsed URL (a tuple, equal for equal URLs) decides it all: the
        # decision is made once per distinct URL, not per request.
        parsed = getattr(url, "_uri_reference", None)
        if parsed is None:
            target = self._target(url)
        else:
            targets = self._targets
            try:
                target = targets[parsed]
            except KeyError:
                target = self._target(url)
                if len(targets) >= _MAX_TARGETS:
                    targets.clear()
                targets[parsed] = target
        if target is None:
            return None
        route, exchange_format, endpoint, path, server = target
        parent = context.get_current()
        if _suppressed(parent):
            return None
        headers = request.headers
        names = header_names(headers)
        # Owner context never travels to a provider, not even through OTel baggage.
        if _BAGGAGE_HEADER in names:
            del headers["baggage"]
        retries = header_value(headers, names, RETRY_COUNT_HEADER)
        attempt = int(retries) if retries is not None and retries.isdigit() else 0
        exchange = Exchange(
            self, route, exchange_format, endpoint, url, path, attempt, parent, server
        )
        content = _request_content(request)
        if (
            endpoint is CHAT_COMPLETIONS
            and route.format is ApiFormat.OPENAI
            and self.config.include_stream_usage
            and content.find(_STREAM_FLAG) != -1
            and content.find(_USAGE_ASKED) == -1
            and content.find(_USAGE_ASKED_SPACED) == -1
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
        "refusal",
        "request_body",
        "request_content",
        "reservation",
        "route",
        "server",
        "started_ns",
        "url",
    )

    def __init__(
        self,
        meter: Meter,
        route: ProviderRoute,
        exchange_format: ExchangeFormat,
        endpoint: Endpoint,
        url: Any,
        path: str,
        attempt: int,
        parent: context.Context,
        server: tuple[str, int],
    ) -> None:
        self.started_ns = time.time_ns()
        self.meter = meter
        self.route = route
        self.format = exchange_format
        self.endpoint = endpoint
        self.parent = parent
        self.owners = current_owner()
        self.attempt = attempt
        self.url = url
        self.path = path
        self.server = server
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
        return self.meter.captures_content

    def refuse(self) -> Any:
        """Record the refused call (no usage, no cost) and give its 402 response."""
        self.finish_unread(self.refusal.status_code)
        return self.refusal

    def finish_with_body(self, status_code: int, body: bytes) -> None:
        """The response body was read in full."""
        self._record(self._from_body, status_code, body)

    def finish_stream(
        self, status_code: int, accumulator: StreamAccumulator, *, complete: bool
    ) -> None:
        """A stream ended, was closed early, or failed."""
        self._record(self._from_stream, status_code, accumulator, complete)

    def finish_unread(self, status_code: int) -> None:
        """The body could not be read for metering: no usage."""
        self._record(self._complete, status_code, None, UsageEvidence.MISSING, [])

    def fail(self, error: BaseException) -> None:
        """The request raised before a complete response: no usage, the error's type."""
        error_type = type(error).__qualname__
        self._record(self._complete, None, None, UsageEvidence.MISSING, [], error_type)

    def _record(self, step: Callable[..., None], *args: Any) -> None:
        """Hand ``step`` to the recorder thread, the first time the exchange ends only."""
        if self._ended:
            return
        self._ended = True
        self.meter.recorder.submit(partial(step, self.ended_ns or time.time_ns(), *args))

    # --- on the recorder thread ------------------------------------------------------------

    def _from_body(self, ended_ns: int, status_code: int, body: bytes) -> None:
        parsed = load_json(body) if status_code < 400 else None
        facts = self.format.response_facts(self.endpoint, parsed) if parsed else None
        outputs = (
            self.format.output_messages(self.endpoint, parsed)
            if parsed and self.meter.captures_content
            else []
        )
        self._complete(ended_ns, status_code, facts, UsageEvidence.PROVIDER_RESPONSE, outputs)

    def _from_stream(
        self, ended_ns: int, status_code: int, accumulator: StreamAccumulator, complete: bool
    ) -> None:
        final = complete or accumulator.finished
        outputs = accumulator.output_messages() if self.meter.captures_content else []
        evidence = UsageEvidence.STREAM_FINAL if final else UsageEvidence.STREAM_INCOMPLETE
        self._complete(ended_ns, status_code, accumulator.facts(), evidence, outputs)

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
        body = self.request_body
        if body is None:
            body = (load_json(self.request_content) if self.request_content else None) or {}
        request = self.format.request_facts(self.endpoint, self.path, body)
        operation = _VALUES[self.endpoint.operation]
        host, port = self.server
        # What describes the call, shared by many events: encoded once for all of them.
        common: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: self.route.name,
            GEN_AI_REQUEST_STREAM: request.stream,
            SERVER_ADDRESS: host,
            SERVER_PORT: port,
            P402_ATTEMPT: self.attempt,
            P402_PRIVACY_MODE: meter.privacy_mode,
            P402_POLICY_RESULT: _VALUES[self.policy_result],
            P402_PRICE_VERSION: meter.price_version,
        }
        if self.policy_reason:
            common[P402_POLICY_REASON] = self.policy_reason
        if self.model_original:
            common[P402_MODEL_ORIGINAL] = self.model_original
        if request.model:
            common[GEN_AI_REQUEST_MODEL] = request.model
        if request.max_tokens is not None:
            common[GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
        owners = self.owners
        if meter.has_owner_defaults:
            owners = {**meter.config.owner_defaults, **owners}
        for dimension, value in owners.items():
            common[_OWNER_ATTRIBUTES.get(dimension) or owner_attribute(dimension)] = value
        if "session" in owners:
            common[GEN_AI_CONVERSATION_ID] = owners["session"]

        # What this event alone says.
        attributes: dict[str, Any] = {P402_EVENT_ID: self.event_id or new_event_id()}
        failed = error_type is not None
        if status_code is not None:
            attributes[HTTP_RESPONSE_STATUS_CODE] = status_code
            if status_code >= 400:
                failed = True
                error_type = str(status_code)
        if error_type is not None:
            attributes[ERROR_TYPE] = error_type
        if facts is None:
            usage = _NO_USAGE
        else:
            usage = facts.usage
            if facts.model:
                attributes[GEN_AI_RESPONSE_MODEL] = facts.model
            if facts.response_id:
                attributes[GEN_AI_RESPONSE_ID] = facts.response_id
            if facts.finish_reasons:
                attributes[GEN_AI_RESPONSE_FINISH_REASONS] = facts.finish_reasons
        if not usage.measured and evidence is not UsageEvidence.STREAM_INCOMPLETE:
            evidence = UsageEvidence.MISSING
        attributes[P402_USAGE_EVIDENCE] = _VALUES[evidence]
        if usage.input_tokens is not None:
            attributes[GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        if usage.output_tokens is not None:
            attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if usage.cache_read_tokens is not None:
            attributes[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
        if usage.cache_write_tokens is not None:
            attributes[GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_tokens
        if usage.reasoning_tokens is not None:
            attributes[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
        cost = self._cost(usage, facts, evidence, request.model)
        if cost is None:
            attributes[P402_COST_EVIDENCE] = _UNPRICED
        else:
            amount, cost_evidence, source = cost
            attributes[P402_COST_EVIDENCE] = cost_evidence
            attributes[GEN_AI_USAGE_COST_AMOUNT] = usd_str(amount)
            attributes[GEN_AI_USAGE_COST_CURRENCY] = COST_CURRENCY_USD
            attributes[GEN_AI_USAGE_COST_SOURCE] = source
        if self.reservation is not None and meter.enforcer is not None:
            meter.enforcer.settle(self, None if cost is None else cost[0])

        content = meter.content
        if content.captures_content:
            inputs = self.format.input_messages(self.endpoint, body)
            attributes.update(content.attributes(inputs, outputs))
        if content.signs_events:
            attributes[P402_EVENT_SIGNATURE] = content.sign({**common, **attributes})

        meter.sink.emit(
            f"{operation} {request.model}" if request.model else operation,
            self.parent,
            self.started_ns,
            ended_ns,
            common,
            attributes,
            failed,
        )

    def _cost(
        self,
        usage: TokenUsage,
        facts: ResponseFacts | None,
        evidence: UsageEvidence,
        requested_model: str | None,
    ) -> tuple[Decimal, str, str] | None:
        """The call's cost, its ``p402.cost.evidence`` and its source; ``None``: unpriced."""
        if evidence is UsageEvidence.STREAM_INCOMPLETE:
            # A partial count would understate what the provider bills: no cost at all.
            return None
        if facts is not None and facts.provider_cost is not None:
            return facts.provider_cost, _PROVIDER_REPORTED, _PROVIDER_SOURCE
        model = (facts.model if facts else None) or requested_model
        if not model:
            return None
        cost = compute_cost(usage, model=model, provider=self.route.name, at=self.started_ns)
        return None if cost is None else (cost, _COMPUTED, _LOCAL_SOURCE)
