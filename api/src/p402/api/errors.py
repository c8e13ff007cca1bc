"""Every error the API answers has one shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any, Final, TypedDict

from litestar import Request, Response
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins import InitPluginProtocol
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from p402.receiver.ingest import IngestError

__all__ = [
    "INTERNAL_ERROR",
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "DocumentedErrors",
    "ErrorBody",
    "error_answer",
    "error_document",
    "exception_handlers",
    "problem_of",
]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}
RETRY_AFTER_SECONDS: Final = 2
"""The ``Retry-After`` of a 503: the ledger database could not be reached."""


class ApiError(HTTPException):
    """An error with a machine-readable ``code`` beside its HTTP status."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.code = code


def error_document(code: str, message: str) -> dict[str, dict[str, str]]:
    """The body of an error: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": code, "message": message}}


def problem_of(error: Exception) -> tuple[int, str, str] | None:
    """The status, code and message the API answers ``error`` with; ``None`` for an error it
    does not expect, and for any 500 (answered :data:`INTERNAL_ERROR`, and logged)."""
    if isinstance(error, HTTPException) and error.status_code != HTTP_500_INTERNAL_SERVER_ERROR:
        code = getattr(error, "code", None) or _CODES.get(error.status_code, "error")
        message = error.detail
        if isinstance(error, ValidationException) and isinstance(error.extra, list):
            problems = "; ".join(
                f"{item.get('key', '?')}: {item.get('message', 'invalid')}"
                for item in error.extra
                if isinstance(item, dict)
            )
            message = f"invalid request: {problems}" if problems else message
        return error.status_code, code, message
    if isinstance(error, IngestError):
        return error.status_code, error.code, str(error)
    if isinstance(error, UnicodeDecodeError | RecursionError):
        # Litestar's JSON decoding (and the JSON readers of the ledger) let a body that is
        # not UTF-8, or that nests too deeply to decode, through as these errors
        problem = (
            "nests too deeply" if isinstance(error, RecursionError) else f"is not UTF-8: {error}"
        )
        return 400, "bad_request", f"the body {problem}"
    if isinstance(error, OperationalError) and str(error.orig) == "integer overflow":
        # SQLite adds integers exactly up to 2**63 - 1: about 9.2 million USD in picodollars.
        # Asking again gives the same answer: not a 503.
        return 500, "sum_out_of_range", _SQLITE_SUM_LIMIT
    if isinstance(error, OperationalError | DisconnectionError | PoolTimeout):
        # The database is down, restarting, out of connections or locked: nothing was
        # stored, and the same request can succeed later (OTLP exporters retry a 503).
        return 503, "unavailable", "the ledger database is unavailable; try again later"
    return None


_SQLITE_SUM_LIMIT: Final = (
    "a figure of this answer passes what SQLite adds exactly (about 9.2 million USD, or "
    "9.2 x 10**18 tokens); narrow the question, or keep a ledger this large on PostgreSQL"
)

INTERNAL_ERROR: Final = (
    HTTP_500_INTERNAL_SERVER_ERROR,
    "internal_error",
    "internal server error",
)


def error_answer(
    error: Exception, logger: Any
) -> tuple[int, dict[str, dict[str, str]], dict[str, str]]:
    """The status, body and headers the API answers ``error`` with; logs an unexpected error
    with its traceback, and an unreachable database. A client's error (4xx) is answered, not
    logged: it is no fault of the server's."""
    found = problem_of(error)
    if found is None:
        logger.error("unhandled error", exc_info=error)
        found = INTERNAL_ERROR
    status_code, code, message = found
    headers: dict[str, str] = {}
    if status_code == 503:
        logger.warning("the ledger database is unavailable: %s", error)
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif status_code >= 500 and found is not INTERNAL_ERROR:
        logger.warning("%s: %s", message, error)
    return status_code, error_document(code, message), headers


def _answer(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, dict[str, str]]]:
    status_code, body, headers = error_answer(error, request.logger)
    return Response(body, status_code=status_code, headers=headers or None)


exception_handlers = {
    HTTPException: _answer,
    IngestError: _answer,
    UnicodeDecodeError: _answer,
    RecursionError: _answer,
    HTTP_500_INTERNAL_SERVER_ERROR: _answer,
}


class ErrorDetail(TypedDict):
    code: str
    message: str


class ErrorBody(TypedDict):
    """The body of every error the API answers."""

    error: ErrorDetail


def _error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


class DocumentedErrors(InitPluginProtocol):
    """Documents the errors of every route that needs a key in the one error shape: 400 (bad
    parameters), 401 (no valid key), 403 (a key without the role), 503 (the ledger database
    unavailable), and 404 for routes with path parameters (another tenant's id). A route's own
    ``responses`` take precedence."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        for handler in app_config.route_handlers:
            if not isinstance(handler, HTTPRouteHandler) or "role" not in handler.opt:
                continue
            errors = {
                400: _error_spec("Bad request: an invalid parameter or body"),
                401: _error_spec("No valid API key"),
                403: _error_spec("The key's role does not allow this route"),
                503: _error_spec(
                    "The ledger database is unavailable: nothing was done; try again after "
                    "Retry-After seconds"
                ),
            }
            if "{" in "".join(handler.paths):
                errors[404] = _error_spec("Not found (or another tenant's)")
            handler.responses = {**errors, **(handler.responses or {})}
        return app_config
