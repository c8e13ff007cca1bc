"""The finance dashboard: ``GET /`` serves the page, ``/dashboard/...`` its static assets.

The page is public, static HTML, JavaScript and CSS with no secret in it and nothing loaded
from another origin. In the browser it asks for a read key once (or takes it from a
``#key=...`` URL fragment), keeps it in the browser's storage, and draws every panel from the
JSON API's aggregate routes with ``Authorization: Bearer``.

Asset URLs in the page carry a digest of their content (``?v=...``), so the assets are cached
for a year and a new release is fetched at once; the page itself is revalidated every time.
Its Content-Security-Policy allows scripts, styles, images and API calls from its own origin
only.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Final

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.router import Router
from litestar.static_files import create_static_files_router

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


def _digest(name: str) -> str:
    return hashlib.sha256((DASHBOARD_DIR / name).read_bytes()).hexdigest()[:16]


@cache
def _page() -> str:
    """``index.html`` with each asset URL versioned by its content digest."""
    html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    return _ASSET_REFERENCE.sub(
        lambda match: (
            f'{match["attribute"]}="{ASSETS_PATH}/{match["name"]}?v={_digest(match["name"])}"'
        ),
        html,
    )


@get("/", include_in_schema=False, sync_to_thread=False)
def dashboard_page() -> Response[str]:
    """The dashboard page; it holds no data and needs no key (it asks the browser for one)."""
    return Response(_page(), media_type=MediaType.HTML, headers=_PAGE_HEADERS)


async def _no_sniffing(response: Response[object]) -> Response[object]:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


dashboard_assets: Final[Router] = create_static_files_router(
    path=ASSETS_PATH,
    directories=[DASHBOARD_DIR],
    name="dashboard",
    cache_control=CacheControlHeader(public=True, max_age=31_536_000, immutable=True),
    after_request=_no_sniffing,
    include_in_schema=False,
)
"""The page's JavaScript, CSS and icon, cached for a year (their URLs change with them)."""
