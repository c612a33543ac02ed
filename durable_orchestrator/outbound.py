"""Outbound HTTP to URLs that users or models chose (http_get, webhooks).

A host name says nothing about where it points: `internal.example.com` may resolve to
127.0.0.1 or to the cloud metadata service at 169.254.169.254. So the check is made at
connect time, on the addresses the name resolves to, inside the HTTP client's network backend:
the name is resolved once, every address is checked, and the socket is opened to the checked
address itself — a second lookup that could answer differently (DNS rebinding) never happens.
Every connection goes through it, redirects included. TLS still verifies the certificate
against the host name of the URL.

Refused: loopback, private, link-local, shared (CGNAT), reserved, unspecified, multicast and
documentation addresses, IPv4 addresses embedded in IPv6 (mapped, 6to4, Teredo, NAT64) that
are any of those, and the cloud metadata addresses. An operator may name hosts that are
allowed to resolve to non-public addresses (`private_hosts`); metadata addresses stay refused
even for them.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses to try, in order."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """The URL's host resolves to an address outbound calls must not reach."""


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` must not be connected to, or None when it is a public unicast address."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            if inner:
                return f"{inner} (embedded in {ip})"
    for label, test in (
        ("multicast", ip.is_multicast),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if test:
            return f"a {label} address"
    if not ip.is_global:
        return "not a public address"
    return None


def literal_refusal(host: str, private_hosts: Iterable[str]) -> str | None:
    """For a host that is an IP literal: why it is refused (None for names and public IPs).
    Lets an API refuse a URL at submission; the connect-time check is the one that holds."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    why = refusal(ip)
    if why is None or (ip not in METADATA_ADDRESSES and _opted_in(host, private_hosts)):
        return None
    return f"{host} is {why}"


def _opted_in(host: str, private_hosts: Iterable[str]) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    return any(host == h.strip("[]").lower().rstrip(".") for h in private_hosts)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to the checked address (see the module docstring)."""

    def __init__(self, private_hosts: Iterable[str], resolver: Resolver = system_resolver) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._private_hosts = tuple(private_hosts)
        self._resolve = resolver

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        opted_in = _opted_in(host, self._private_hosts)
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            why = refusal(ip)
            if why and (ip in METADATA_ADDRESSES or not opted_in):
                raise AddressRefused(f"{host!r} resolves to {ip}, {why}")
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolves to no address")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.checked_addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not reachable from outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs milliseconds of CPU: once per process, not once per call.
    return httpx.create_ssl_context()


def checked_client(
    *,
    private_hosts: Iterable[str] = (),
    timeout: float = 10.0,
    resolver: Resolver = system_resolver,
) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through CheckedBackend. It ignores proxy
    environment variables (a proxy would make the proxy's address the one checked) and never
    follows redirects by itself (callers re-check each hop against their allow-lists)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx takes no network backend; its pool does. Same pool, with our backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=_tls_context(),
        max_connections=20,
        max_keepalive_connections=5,
        keepalive_expiry=5.0,
        network_backend=CheckedBackend(private_hosts, resolver),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )
