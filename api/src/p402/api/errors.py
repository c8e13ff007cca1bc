"""Every error the API answers has one shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any, TypedDict

from litestar import Request, Response
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins import InitPluginProtocol
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from p402.receiver.ingest import IngestError

__all__ = ["ApiError", "DocumentedErrors", "ErrorBody", "exception_handlers"]

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


class ApiError(HTTPException):
    """An error with a machine-readable ``code`` beside its HTTP status."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.code = code


def _body(status_code: int, code: str, message: str) -> Response[dict[str, dict[str, str]]]:
    return Response({"error": {"code": code, "message": message}}, status_code=status_code)


def _http_error(
    request: Request[Any, Any, Any], error: HTTPException
) -> Response[dict[str, dict[str, str]]]:
    code = getattr(error, "code", None) or _CODES.get(error.status_code, "error")
    message = error.detail
    if isinstance(error, ValidationException) and isinstance(error.extra, list):
        problems = "; ".join(
            f"{item.get('key', '?')}: {item.get('message', 'invalid')}"
            for item in error.extra
            if isinstance(item, dict)
        )
        message = f"invalid request: {problems}" if problems else message
    return _body(error.status_code, code, message)


def _ingest_error(
    request: Request[Any, Any, Any], error: IngestError
) -> Response[dict[str, dict[str, str]]]:
    return _body(error.status_code, error.code, str(error))


def _undecodable_body(
    request: Request[Any, Any, Any], error: UnicodeDecodeError | RecursionError
) -> Response[dict[str, dict[str, str]]]:
    # Litestar's JSON decoding (and the JSON readers of the ledger) let a body that is not
    # UTF-8, or that nests too deeply to decode, through as these errors
    problem = "nests too deeply" if isinstance(error, RecursionError) else f"is not UTF-8: {error}"
    return _body(400, "bad_request", f"the body {problem}")


def _internal_error(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, dict[str, str]]]:
    request.logger.exception("unhandled error")
    return _body(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error")


exception_handlers = {
    HTTPException: _http_error,
    IngestError: _ingest_error,
    UnicodeDecodeError: _undecodable_body,
    RecursionError: _undecodable_body,
    HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
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
    parameters), 401 (no valid key), 403 (a key without the role), and 404 for routes with
    path parameters (another tenant's id). A route's own ``responses`` take precedence."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        for handler in app_config.route_handlers:
            if not isinstance(handler, HTTPRouteHandler) or "role" not in handler.opt:
                continue
            errors = {
                400: _error_spec("Bad request: an invalid parameter or body"),
                401: _error_spec("No valid API key"),
                403: _error_spec("The key's role does not allow this route"),
            }
            if "{" in "".join(handler.paths):
                errors[404] = _error_spec("Not found (or another tenant's)")
            handler.responses = {**errors, **(handler.responses or {})}
        return app_config
