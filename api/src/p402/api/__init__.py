"""The P402 API: OTLP ingest, queries and the ``p402`` command line, as one Litestar app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p402.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # The app (Litestar, the ledger, the settlement chain client) loads on first use, so
    # that ``p402 --help`` and the data commands start quickly.
    if name == "create_app":
        from p402.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
