"""A small client of a running P402 API, for the command line: ``P402_ENDPOINT`` and
``P402_API_KEY`` (or explicit values) name the server and the key."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from http.client import HTTPResponse
from typing import Final

from p402.instrumentation.vocabulary import API_KEY_HEADER

__all__ = ["DEFAULT_ENDPOINT", "ApiClient", "RemoteError"]

DEFAULT_ENDPOINT: Final = "http://127.0.0.1:4318"
_LARGE_BODY: Final = 1 << 20


class RemoteError(RuntimeError):
    """The server answered an error (``status``, ``code``), or could not be reached."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ApiClient:
    """Requests to one P402 server with one API key."""

    def __init__(self, endpoint: str | None = None, api_key: str | None = None) -> None:
        self.endpoint = (endpoint or os.environ.get("P402_ENDPOINT") or DEFAULT_ENDPOINT).rstrip(
            "/"
        )
        parts = urllib.parse.urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RemoteError(
                None,
                "bad_endpoint",
                f"the endpoint (--endpoint or P402_ENDPOINT) must be an http(s) URL of a P402 "
                f"server, not {self.endpoint!r}",
            )
        key = api_key or os.environ.get("P402_API_KEY")
        if not key:
            raise RemoteError(None, "no_api_key", "an API key is needed: --api-key or P402_API_KEY")
        self._key = key

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float = 300.0,
    ) -> HTTPResponse:
        """Send the request; the response is open for streaming. Errors raise RemoteError."""
        url = self.endpoint + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {API_KEY_HEADER: self._key}
        if content_type:
            headers["content-type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise _remote_error(error) from None
        except OSError as error:  # URLError included (a refused connection, a bad host)
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            hint = ""
            if body is not None and len(body) > _LARGE_BODY and isinstance(reason, ConnectionError):
                hint = f" (while sending {len(body):,} bytes: more than the server takes?)"
            raise RemoteError(
                None, "unreachable", f"cannot reach {self.endpoint}: {reason}{hint}"
            ) from None
        return response

    def json(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        """The answer's JSON object; a :class:`RemoteError` when it is none (not a P402
        server at the endpoint, or a connection that broke off)."""
        try:
            with self.open(method, path, **kwargs) as response:  # type: ignore[arg-type]
                answer = json.loads(response.read())
        except (ValueError, OSError, http.client.HTTPException) as error:
            raise RemoteError(
                None, "bad_answer", f"{self.endpoint} did not answer as a P402 server ({error})"
            ) from None
        if not isinstance(answer, dict):
            raise RemoteError(
                None, "bad_answer", f"{self.endpoint} did not answer as a P402 server"
            )
        return answer


def _remote_error(error: urllib.error.HTTPError) -> RemoteError:
    try:
        detail = json.loads(error.read())["error"]
        return RemoteError(error.code, detail["code"], detail["message"])
    except (ValueError, KeyError, TypeError):
        return RemoteError(error.code, "http_error", f"HTTP {error.code} {error.reason}")
