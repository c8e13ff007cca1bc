"""Operation names in ``/schema`` from each handler's own function.

Litestar derives an operation's summary, description and ``operationId`` from the handler's
function. When two handlers share a path, the first is registered twice, and by the second
time a ``sync_to_thread`` handler's function is wrapped in ``AsyncCallable``: its operation
would be summarised "Asynccallable" with the wrapper's docstring. :class:`HandlerNames` fixes
all three on every handler before registration, from the function as it was written.
"""

from __future__ import annotations

from inspect import cleandoc
from types import SimpleNamespace
from typing import Any

from litestar._openapi.utils import SEPARATORS_CLEANUP_PATTERN, default_operation_id_creator
from litestar.config.app import AppConfig
from litestar.handlers import HTTPRouteHandler
from litestar.plugins import InitPluginProtocol
from litestar.types import Method
from litestar.utils.helpers import get_name, unwrap_partial

__all__ = ["HandlerNames"]


def _operation_id(name: str) -> Any:
    """Litestar's own ``operationId`` rule, applied to the function's name."""

    def create(handler: HTTPRouteHandler, method: Method, components: list[Any]) -> str:
        named = SimpleNamespace(handler_name=name, http_methods=handler.http_methods)
        return default_operation_id_creator(named, method, components)  # type: ignore[arg-type]

    return create


class HandlerNames(InitPluginProtocol):
    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        for handler in app_config.route_handlers:
            if not isinstance(handler, HTTPRouteHandler):
                continue
            function = unwrap_partial(handler.fn)
            name = get_name(function)
            if handler.summary is None:
                handler.summary = SEPARATORS_CLEANUP_PATTERN.sub("", name.title())
            if handler.description is None and function.__doc__:
                handler.description = cleandoc(function.__doc__)
            if handler.operation_id is None:
                handler.operation_id = _operation_id(name)
        return app_config
