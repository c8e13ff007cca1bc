"""The hooks on ``httpx`` / ``httpx2`` ``Client.send`` and ``AsyncClient.send``.

Hooking ``send`` (not the transport) covers clients built on any transport, and gives the
meter the request before it leaves. Each class is patched at most once, also when
``httpx2.alias_httpx()`` makes ``httpx`` and ``httpx2`` the same module.

Metering never breaks the application's call: should it fail unexpectedly, the error is
logged and the call goes on as it would unmetered; before the call, with enforcement on and
``P402_FAIL_MODE=closed``, the error is raised instead, so the call does not leave undecided.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from p402.instrumentation._metering import Exchange, Meter
from p402.instrumentation._streams import tap_response

__all__ = ["CLIENT_MODULES", "patch_clients", "unpatch_clients"]

CLIENT_MODULES = ("httpx", "httpx2")

_logger = logging.getLogger(__name__)
_logged: set[tuple[str, str]] = set()


def _metering_failed(meter: Meter, error: Exception, stage: str) -> None:
    """Log a failure of metering itself (with its traceback the first time for each kind and
    stage); before the call, raise it when enforcement must fail closed."""
    if stage == "before" and meter.enforcer is not None and meter.enforcer.fail_closed:
        raise error
    kind = (type(error).__qualname__, stage)
    first = kind not in _logged
    _logged.add(kind)
    _logger.log(
        logging.ERROR if first else logging.DEBUG,
        "P402 could not meter an LLM call (%s it was sent); the call goes on unmetered",
        stage,
        exc_info=first,
    )


def _finish(meter: Meter, exchange: Exchange, response: Any, stream: bool, is_async: bool) -> None:
    """Meter the response the call got: read as the application reads it, when streamed."""
    try:
        if stream:
            tap_response(exchange, response, is_async=is_async)
        else:
            exchange.finish_with_body(response.status_code, response.content)
    except Exception as error:
        _metering_failed(meter, error, "after")


def _sync_send(meter: Meter) -> Callable[..., Any]:
    def send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            exchange = meter.begin(args[0] if args else kwargs["request"])
        except Exception as error:
            _metering_failed(meter, error, "before")
            exchange = None
        if exchange is None:
            return wrapped(*args, **kwargs)
        if exchange.refusal is not None:
            return exchange.refuse()
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as error:
            exchange.fail(error)
            raise
        _finish(meter, exchange, response, kwargs.get("stream", False), is_async=False)
        return response

    return send


def _async_send(meter: Meter) -> Callable[..., Any]:
    async def send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            exchange = meter.begin(args[0] if args else kwargs["request"])
        except Exception as error:
            _metering_failed(meter, error, "before")
            exchange = None
        if exchange is None:
            return await wrapped(*args, **kwargs)
        if exchange.refusal is not None:
            return exchange.refuse()
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as error:
            exchange.fail(error)
            raise
        _finish(meter, exchange, response, kwargs.get("stream", False), is_async=True)
        return response

    return send


def patch_clients(meter: Meter) -> list[type]:
    """Hook every importable client class; returns the classes patched."""
    patched: list[type] = []
    for module_name in CLIENT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for cls, wrapper in ((module.Client, _sync_send), (module.AsyncClient, _async_send)):
            if cls in patched:
                continue
            wrapt.wrap_function_wrapper(cls, "send", wrapper(meter))
            patched.append(cls)
    return patched


def unpatch_clients(classes: list[type]) -> None:
    for cls in classes:
        unwrap(cls, "send")
