"""The ASGI app: ``create_app()`` wires the ledger engine, auth and every route."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import anyio.to_thread
from litestar import Litestar
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)
from sqlalchemy import Engine

from p402.api.auth import authenticate, provide_identity
from p402.api.errors import DocumentedErrors, exception_handlers
from p402.api.openapi_names import HandlerNames
from p402.api.routes.alerts import get_alerts
from p402.api.routes.anomalies import get_anomalies, post_anomaly_review
from p402.api.routes.budgets import get_budgets, get_projections, put_budget
from p402.api.routes.dashboard import dashboard_assets, dashboard_page
from p402.api.routes.drift import get_drift
from p402.api.routes.events import get_event_by_id, get_events, post_events
from p402.api.routes.exports import get_export
from p402.api.routes.filters import provide_event_filter
from p402.api.routes.health import healthz
from p402.api.routes.imports import get_import_mappings, post_import, put_import_mappings
from p402.api.routes.ingest import export_traces
from p402.api.routes.keys import delete_key, get_keys, post_key
from p402.api.routes.observations import get_observations
from p402.api.routes.outcomes import post_outcomes
from p402.api.routes.policies import (
    AUTHORIZE_PATH,
    answer_authorize,
    get_policies,
    get_policy_snapshot,
    post_authorize,
    put_policy,
    refresh_seconds,
)
from p402.api.routes.receipts import get_receipt_by_id, get_receipt_proof, get_receipts
from p402.api.routes.reconciliation import get_reconciliation
from p402.api.routes.sessions import get_sessions
from p402.api.routes.settings import get_settings, put_settings
from p402.api.routes.settlements import get_settlements, post_session_close
from p402.api.routes.spend import get_spend, get_spend_timeseries
from p402.api.routes.tenant import delete_tenant
from p402.api.routes.webhooks import get_webhooks, put_webhooks
from p402.api.scheduler import SettingsError, scheduler_lifespans
from p402.instrumentation.version import __version__
from p402.ledger.database import connect, migrate

__all__ = ["create_app"]

_T = TypeVar("_T")


class _App(Litestar):
    """Litestar, with ``POST /v1/authorize`` answered without the framework's per-request
    work (:func:`p402.api.routes.policies.answer_authorize`)."""

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            http = cast(HTTPScope, scope)
            if (
                http["path"] == AUTHORIZE_PATH
                and http["method"] == "POST"
                and not http.get("root_path")  # mounted: the router knows where
            ):
                http["app"] = self
                await answer_authorize(self, http, cast(Receive, receive), cast(Send, send))
                return
        await super().__call__(scope, receive, send)


async def _run_sync(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


def create_app(
    engine: Engine | None = None,
    *,
    database_url: str | None = None,
    scheduler: bool | None = None,
) -> Litestar:
    """The P402 app on ``engine`` (default: ``P402_DATABASE_URL``), schema prepared.

    The scheduler runs with the app unless ``scheduler`` is false (default: unless
    ``P402_SCHEDULER=off``). A wrong setting raises :class:`SettingsError`, naming it.
    """
    try:
        policy_refresh_seconds = refresh_seconds()
    except ValueError as error:
        raise SettingsError(str(error)) from None
    engine = engine or connect(database_url)
    migrate(engine)

    def provide_engine() -> Engine:
        return engine

    app = _App(
        route_handlers=[
            healthz,
            dashboard_page,
            dashboard_assets,
            export_traces,
            get_events,
            get_event_by_id,
            post_events,
            get_spend,
            # spend over time, drift and settings
            get_spend_timeseries,
            get_drift,
            get_settings,
            put_settings,
            # budgets and policies
            get_budgets,
            put_budget,
            get_projections,
            get_policies,
            put_policy,
            get_policy_snapshot,
            post_authorize,
            # scheduler signals
            get_alerts,
            get_anomalies,
            post_anomaly_review,
            post_outcomes,
            get_observations,
            get_webhooks,
            put_webhooks,
            # settlement
            get_receipts,
            get_receipt_by_id,
            get_receipt_proof,
            post_session_close,
            get_sessions,
            get_settlements,
            # exports, imports and keys
            get_export,
            post_import,
            get_import_mappings,
            put_import_mappings,
            get_reconciliation,
            post_key,
            get_keys,
            delete_key,
            delete_tenant,
        ],
        dependencies={
            "engine": Provide(provide_engine, sync_to_thread=False),
            "identity": Provide(provide_identity, sync_to_thread=False),
            "event_filter": Provide(provide_event_filter, sync_to_thread=False),
        },
        guards=[authenticate],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        plugins=[DocumentedErrors(), HandlerNames()],
        lifespan=scheduler_lifespans(engine, scheduler),
        # Configure only the app's own logger: the host process keeps its logging as it is.
        # Errors are logged by the exception handlers, unexpected ones only (see
        # ``error_answer``): a 404 or a 401 is not a traceback in the server's log.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="never"),
        openapi_config=OpenAPIConfig(
            title="P402", version=__version__, path="/schema", use_handler_docstrings=True
        ),
    )
    app.state.engine = engine
    app.state.run_sync = _run_sync
    app.state.policy_refresh_seconds = policy_refresh_seconds
    return app
