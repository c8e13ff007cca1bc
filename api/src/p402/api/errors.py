"""Every error the API answers has one shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from p402.receiver.ingest import IngestError

__all__ = ["ApiError", "exception_handlers"]

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


def _internal_error(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, dict[str, str]]]:
    request.logger.exception("unhandled error")
    return _body(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error")


exception_handlers = {
    HTTPException: _http_error,
    IngestError: _ingest_error,
    HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
}
