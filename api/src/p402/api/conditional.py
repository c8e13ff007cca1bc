"""Conditional requests: whether a client already holds the version an ``ETag`` names."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["holds_version"]


def holds_version(headers: Mapping[str, str], etag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (answer it 304)."""
    return etag in (tag.strip() for tag in headers.get("if-none-match", "").split(","))
