"""The P402 API: OTLP ingest, queries and the ``p402`` command line, as one Litestar app."""

from p402.api.app import create_app

__all__ = ["create_app"]
