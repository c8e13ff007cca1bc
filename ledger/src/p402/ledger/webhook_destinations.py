"""Where webhooks may post: public internet addresses only, unless the operator allows more.

A tenant's admin chooses its webhook URLs, and the server posts to them from inside the
operator's network. Without a guard, a URL such as ``http://169.254.169.254/...`` or
``http://10.0.0.5:8080/...`` would have the server reach hosts only it can reach. So by
default a delivery connects only to addresses that are globally routable
(:attr:`ipaddress.IPv4Address.is_global`): loopback, private, link-local (cloud metadata),
shared, reserved and multicast ranges are refused.

The check is made on the address the connection is actually opened to: the host name is
resolved once, every address it resolves to must be allowed, and the connection goes to one
of those same addresses (the request keeps the host name for ``Host`` and TLS), so a name
that resolves to a public address when checked and to a private one when connecting (DNS
rebinding) cannot slip through. Through a proxy configured in the environment
(``HTTPS_PROXY``, ``HTTP_PROXY``), the proxy connects, and its own rules apply.

A deployment whose webhooks legitimately live on its own network (a chat relay on
``10.x``, a receiver on the same host) sets ``P402_WEBHOOK_ALLOW_PRIVATE=true``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Final

import httpcore
import httpx

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "DestinationRefused",
    "destination_client",
    "private_allowed",
    "refused_literal_host",
]

ALLOW_PRIVATE_ENV: Final = "P402_WEBHOOK_ALLOW_PRIVATE"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_LOCAL_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class DestinationRefused(httpx.ConnectError):
    """A webhook host that resolves to an address deliveries may not reach."""


def private_allowed() -> bool:
    """Whether the operator allows deliveries to non-public addresses."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in _TRUE


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def refused_literal_host(host: str) -> str | None:
    """Why a URL host that needs no lookup (an IP literal, ``localhost``) is refused, or
    ``None``. Names are checked when a delivery resolves them."""
    if private_allowed():
        return None
    name = host.strip("[]").rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{host} is this server itself"
    try:
        public = _is_public(name)
    except ValueError:
        return None  # a name, not an address
    return None if public else f"{host} is not a public internet address"


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise httpx.ConnectError(f"cannot resolve {host}: {error}") from None
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in found]


class _PublicOnlyBackend(httpcore.SyncBackend):
    """Opens TCP connections only to public addresses, to the very address it checked."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _addresses(host, port)
        refused = sorted({address for _, address in addresses if not _is_public(address)})
        if refused:
            raise DestinationRefused(
                f"{host} resolves to {', '.join(refused)}, not a public internet address "
                f"(set {ALLOW_PRIVATE_ENV}=true to allow deliveries on private networks)"
            )
        last_error: Exception | None = None
        for _, address in addresses:
            try:
                return super().connect_tcp(
                    address, port, timeout, local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as error:
                last_error = error
        raise last_error or httpcore.ConnectError(f"no address to connect to for {host}")


def destination_client(timeout: float) -> httpx.Client:
    """The HTTP client deliveries post with: redirects not followed (a redirect could point
    anywhere), and, unless private destinations are allowed, connections to public
    addresses only."""
    client = httpx.Client(timeout=timeout, follow_redirects=False)
    if not private_allowed():
        transport = client._transport  # the direct (not proxied) transport
        pool = getattr(transport, "_pool", None)
        if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
            client.close()
            raise RuntimeError("this httpx version's transport cannot be restricted")
        pool._network_backend = _PublicOnlyBackend()
    return client
