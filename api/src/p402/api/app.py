"""The ASGI app: ``create_app()`` wires the ledger engine, auth and every route."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from litestar import Litestar
from litestar.di import Provide
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from sqlalchemy import Engine

from p402.api.auth import provide_identity
from p402.api.errors import exception_handlers
from p402.api.routes.events import get_event_by_id, get_events, post_events
from p402.api.routes.filters import provide_event_filter
from p402.api.routes.health import healthz
from p402.api.routes.ingest import export_traces
from p402.api.routes.spend import get_spend
from p402.instrumentation.version import __version__
from p402.ledger.database import connect, migrate

__all__ = ["create_app"]

_T = TypeVar("_T")


async def _run_sync(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


def create_app(engine: Engine | None = None, *, database_url: str | None = None) -> Litestar:
    """The P402 app on ``engine`` (default: ``P402_DATABASE_URL``), schema prepared."""
    engine = engine or connect(database_url)
    migrate(engine)

    def provide_engine() -> Engine:
        return engine

    app = Litestar(
        route_handlers=[
            healthz,
            export_traces,
            get_events,
            get_event_by_id,
            post_events,
            get_spend,
            # budgets and policies
            # scheduler signals
            # settlement
            # exports, imports and keys
        ],
        dependencies={
            "engine": Provide(provide_engine, sync_to_thread=False),
            "identity": Provide(provide_identity, sync_to_thread=True),
            "event_filter": Provide(provide_event_filter, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        # Configure only the app's own logger: the host process keeps its logging as it is.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="always"),
        openapi_config=OpenAPIConfig(title="P402", version=__version__, path="/schema"),
    )
    app.state.engine = engine
    app.state.run_sync = _run_sync
    return app
