"""Calls to addresses users give us (webhooks, push endpoints): never into our own network.

A URL a user registers could point at this host (``127.0.0.1``, ``localhost``,
``127.1``, ``2130706433``, ``0x7f000001``, ``[::1]``, another service's port), at
the private network or at a cloud's metadata service (``169.254.169.254``). The
guard refuses loopback, private, link-local, unique-local, multicast, unspecified
and other non-global addresses:

- at registration, on the URL as written (``OutboundPolicy.check_url``): an IP
  literal in any of its spellings, and ``localhost`` names;
- at delivery, after DNS resolution, on every address the name resolves to, and
  the connection goes to the address that was checked (``guarded_transport`` for
  httpx; the notifier's Web Push uses ``OutboundPolicy.resolve`` as aiohttp's
  resolver): a name that resolved to a public
  address when registered and to ``127.0.0.1`` now (DNS rebinding) is refused.

Operators allow on-premises receivers with the ``outbound_allow`` setting:
networks (``10.20.0.0/16``, ``127.0.0.1``) whose addresses may be called, and
host names that may be called whatever they resolve to. Calls whose target the
operator configures (order-intake fetching documents from ``case_handling_url``)
do not go through the guard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What inet_aton reads as an IPv4 address: 127.1, 2130706433, 0x7f000001, 0177.0.0.1.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.IGNORECASE)
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$"
)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(ValueError):
    """The target is not one we call: the reason says why (no secrets in it)."""


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in any spelling (``127.1``, ``0x7f000001``, ``[::1]``)."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    return None


def classify(address: IPAddress) -> str | None:
    """Why we do not call ``address`` (loopback, private, ...), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return classify(embedded)
        if address in _UNIQUE_LOCAL:
            return "unique-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def _normal_name(host: str) -> str:
    return host.strip().rstrip(".").lower()


class OutboundPolicy:
    """Which targets we call; ``allow``: networks/addresses and host names operators vouch for."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.names: set[str] = set()
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                name = _normal_name(entry)
                if not _HOST_NAME.match(name):
                    raise ValueError(f"{entry!r} is neither an IP network nor a host name") from None
                self.names.add(name)

    def allows_name(self, host: str) -> bool:
        return _normal_name(host) in self.names

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when we may call it."""
        reason = classify(address)
        if reason is None:
            return None
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if any(address in net or (mapped is not None and mapped in net) for net in self.networks):
            return None
        return reason

    def check_address(self, host: str, address: IPAddress) -> None:
        reason = self.refusal(address)
        if reason is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise OutboundRefused(f"{shown} is a {reason} address; only public addresses are called")

    def allowed_target(self, host: str) -> bool:
        """The host is allow-listed: by name, or an address in an allowed network."""
        if self.allows_name(host):
            return True
        address = parse_address(host)
        return address is not None and classify(address) is not None and self.refusal(address) is None

    def check_url(self, url: str, *, https_only: bool = False) -> None:
        """Refuse a URL we would not call, as written (before any DNS look-up).

        ``https_only``: plain http only for allow-listed (on-premises) targets.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise OutboundRefused("only http(s) URLs with a host are called")
        if parts.username is not None or parts.password is not None:
            raise OutboundRefused("URLs with credentials in them are not accepted")
        if https_only and parts.scheme != "https" and not self.allowed_target(host):
            raise OutboundRefused("only https URLs are accepted")
        if self.allows_name(host):
            return
        address = parse_address(host)
        if address is not None:
            self.check_address(host, address)
            return
        name = _normal_name(host)
        if name == "localhost" or name.endswith(".localhost"):
            raise OutboundRefused(f"{host} is a loopback name; only public addresses are called")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``: every one it resolves to must be allowed."""
        address = parse_address(host)
        if address is not None:
            if not self.allows_name(host):
                self.check_address(host, address)
            return [str(address)]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise OutboundRefused(f"{host} does not resolve")
        if not self.allows_name(host):
            for text in addresses:
                self.check_address(host, ipaddress.ip_address(text.split("%", 1)[0]))
        return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allowed (TLS still
    verifies the host name: httpcore does the handshake with the URL's host)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.policy.resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not called")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(policy: OutboundPolicy, **options: Any) -> httpx.AsyncHTTPTransport:
    """An httpx transport that resolves, checks and connects to the checked address. Use it
    with ``trust_env=False`` (an environment proxy would be connected to instead)."""
    transport = httpx.AsyncHTTPTransport(**options)
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):  # pragma: no cover - an httpcore upgrade changed it
        raise RuntimeError("httpcore has no _network_backend: the outbound guard cannot be installed")
    pool._network_backend = _GuardedBackend(policy)
    return transport


def guarded_client(policy: OutboundPolicy, *, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=guarded_transport(policy),
        timeout=httpx.Timeout(timeout),
        trust_env=False,
        follow_redirects=False,
    )
