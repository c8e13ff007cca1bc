"""The finance dashboard: ``GET /`` serves the page, ``/dashboard/...`` its static assets.

The page is public, static HTML, JavaScript and CSS with no secret in it and nothing loaded
from another origin. In the browser it asks for a read key once (or takes it from a
``#key=...`` URL fragment), keeps it in the browser's storage, and draws every panel from the
JSON API's aggregate routes with ``Authorization: Bearer``.

Asset URLs carry a digest of the asset as served (``?v=...``): in the page, and in the
modules' imports of each other, so a module's digest changes with any module it imports. An
asset asked for with its current digest is cached for a year; asked for otherwise, it is
revalidated every time (its digest is its ``ETag``), so a new release is fetched at once,
whichever asset changed. The page itself is revalidated every time. Its
Content-Security-Policy allows scripts, styles, images and API calls from its own origin only.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Final

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from p402.api.conditional import holds_version

__all__ = [
    "ASSETS_PATH",
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_DIR",
    "dashboard_assets",
    "dashboard_page",
]

DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"
"""Where the page and its assets live (package data of ``p402-api``)."""

ASSETS_PATH: Final = "/dashboard"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_ASSET_REFERENCE: Final = re.compile(rf'(?P<attribute>href|src)="{ASSETS_PATH}/(?P<name>[\w.-]+)"')
_MODULE_IMPORT: Final = re.compile(r'(?P<start>\bfrom\s+")\./(?P<name>[\w.-]+\.js)"')
_MEDIA_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_CACHED_FOR_A_YEAR: Final = "public, max-age=31536000, immutable"


@cache
def _asset(name: str) -> tuple[bytes, str] | None:
    """An asset as served (a module's imports versioned by their digests) and its digest;
    ``None`` for anything but an asset of the dashboard (the page is ``/`` only)."""
    path = DASHBOARD_DIR / name
    if path.suffix not in _MEDIA_TYPES or path.parent != DASHBOARD_DIR or not path.is_file():
        return None
    content = path.read_bytes()
    if path.suffix == ".js":
        content = _MODULE_IMPORT.sub(
            lambda match: f'{match["start"]}./{match["name"]}?v={_version(match["name"])}"',
            content.decode("utf-8"),
        ).encode("utf-8")
    return content, hashlib.sha256(content).hexdigest()[:16]


def _version(name: str) -> str:
    found = _asset(name)
    if found is None:
        raise LookupError(f"the dashboard refers to {name}, which it does not have")
    return found[1]


@cache
def _page() -> str:
    """``index.html`` with each asset URL versioned by its digest."""
    html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    return _ASSET_REFERENCE.sub(
        lambda match: (
            f'{match["attribute"]}="{ASSETS_PATH}/{match["name"]}?v={_version(match["name"])}"'
        ),
        html,
    )


@get("/", include_in_schema=False, sync_to_thread=False)
def dashboard_page() -> Response[str]:
    """The dashboard page; it holds no data and needs no key (it asks the browser for one)."""
    return Response(_page(), media_type=MediaType.HTML, headers=_PAGE_HEADERS)


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def dashboard_assets(
    request: Request[object, object, State], name: FromPath[str]
) -> Response[bytes]:
    """The page's JavaScript, CSS and icon (see the module docstring for their caching)."""
    found = _asset(name)
    if found is None:
        raise NotFoundException()
    content, digest = found
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": (
            _CACHED_FOR_A_YEAR if request.query_params.get("v") == digest else "no-cache"
        ),
        "X-Content-Type-Options": "nosniff",
    }
    if holds_version(request.headers, etag):
        return Response(b"", status_code=304, headers=headers)
    media_type = _MEDIA_TYPES[Path(name).suffix]
    return Response(content, media_type=media_type, headers=headers)
