"""http_get against a hostile local server: bounded bodies, every redirect re-checked, and no
connection to a loopback, private or metadata address unless the host is explicitly opted in."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest

from durable_orchestrator import outbound
from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import ToolContext, ToolError
from durable_orchestrator.tools.http_get import MAX_BODY_CHARS, TRUNCATED, HttpGetArgs, http_get


@dataclass
class HostileServer:
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bomb: bytes = b""

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            target = head[0].split(" ")[1]
            headers = {
                k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)
            }
            self.requests.append((target, headers))
            path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
            if path == "/page":
                await self.reply(writer, b"200 OK", b"hello from the page")
            elif path == "/redirect":
                await self.reply(
                    writer, b"302 Found", b"", [(b"Location", query["to"][0].encode())]
                )
            elif path == "/loop":
                await self.reply(writer, b"302 Found", b"", [(b"Location", b"/loop")])
            elif path == "/bomb":
                await self.reply(writer, b"200 OK", self.bomb, [(b"Content-Encoding", b"gzip")])
            elif path == "/endless":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                )
                chunk = b"x" * 65536
                while True:  # until the client hangs up
                    writer.write(chunk)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def reply(
        self,
        writer: asyncio.StreamWriter,
        status: bytes,
        body: bytes,
        extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    ) -> None:
        lines = [
            b"HTTP/1.1 " + status,
            b"Content-Length: " + str(len(body)).encode(),
            b"Content-Type: text/plain; charset=utf-8",
            b"Connection: close",
        ]
        lines += [k + b": " + v for k, v in extra]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()


@functools.cache
def _bomb() -> bytes:
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(gz.compress(bytes(1 << 20)) for _ in range(64)) + gz.flush()  # 64 MB inflated


@pytest.fixture
async def server() -> AsyncIterator[HostileServer]:
    state = HostileServer()
    state.bomb = _bomb()
    srv = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = srv.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        srv.close()
        await srv.wait_closed()


def ctx(**kw) -> ToolContext:  # type: ignore[no-untyped-def]
    return ToolContext(task_id="t", user_id="u", step_index=0, settings=Settings(**kw))


# The fixture's host is loopback: these tests opt it in explicitly, as an operator would.
OPTED_IN = {"http_get_allowed_hosts": ["127.0.0.1"], "http_get_private_hosts": ["127.0.0.1"]}


async def test_loopback_is_refused_unless_the_operator_opts_the_host_in(
    server: HostileServer,
) -> None:
    with pytest.raises(ToolError, match=r"loopback.*ORCH_HTTP_GET_PRIVATE_HOSTS"):
        await http_get(
            HttpGetArgs(url=server.url("/page")), ctx(http_get_allowed_hosts=["127.0.0.1"])
        )
    assert server.requests == []  # refused before connecting
    result = await http_get(HttpGetArgs(url=server.url("/page")), ctx(**OPTED_IN))
    assert result == "HTTP 200\nhello from the page"


async def test_a_name_is_checked_by_the_address_it_resolves_to(server: HostileServer) -> None:
    # An allowed *name* that resolves to loopback (as a subdomain pointing at 127.0.0.1 would).
    with pytest.raises(ToolError, match=r"'localhost' resolves to .*loopback"):
        await http_get(
            HttpGetArgs(url=server.url("/page", "localhost")),
            ctx(http_get_allowed_hosts=["localhost"]),
        )
    assert server.requests == []


async def test_an_endless_body_is_cut_at_the_byte_cap(server: HostileServer) -> None:
    result = await http_get(HttpGetArgs(url=server.url("/endless")), ctx(**OPTED_IN))
    assert result.startswith("HTTP 200\nxxx") and result.endswith(TRUNCATED)
    assert len(result) <= MAX_BODY_CHARS + 50


async def test_a_compression_bomb_is_inflated_only_up_to_the_cap(server: HostileServer) -> None:
    tracemalloc.start()
    try:
        result = await http_get(HttpGetArgs(url=server.url("/bomb")), ctx(**OPTED_IN))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.endswith(TRUNCATED) and len(result) <= MAX_BODY_CHARS + 50
    assert peak < 10 * 1024 * 1024, f"{peak:,} bytes"  # the body inflates to 64 MB


@pytest.mark.parametrize(
    "target, error",
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://10.0.0.8/admin", "private"),
        ("http://evil.example/", "not allowed"),
        ("file:///etc/passwd", "only http"),
    ],
)
async def test_every_redirect_is_checked_again(
    server: HostileServer, target: str, error: str
) -> None:
    # Allow-listed and even opted in: a metadata address is refused all the same.
    allowed = ["127.0.0.1", "169.254.169.254", "::ffff:169.254.169.254", "10.0.0.8"]
    settings = {
        "http_get_allowed_hosts": allowed,
        "http_get_private_hosts": ["127.0.0.1", "169.254.169.254"],
    }
    with pytest.raises(ToolError, match=error):
        await http_get(HttpGetArgs(url=server.url(f"/redirect?to={target}")), ctx(**settings))
    assert [r[0].split("?")[0] for r in server.requests] == ["/redirect"]


async def test_redirects_are_limited(server: HostileServer) -> None:
    with pytest.raises(ToolError, match="more than 5 redirects"):
        await http_get(HttpGetArgs(url=server.url("/loop")), ctx(**OPTED_IN))
    assert len(server.requests) == 6


async def test_the_connection_goes_to_the_address_that_was_checked(server: HostileServer) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        # A rebinding DNS server would answer differently the next time; there is none.
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["8.8.8.8"]

    async with outbound.checked_client(private_hosts=["svc.internal"], resolver=resolver) as client:
        resp = await client.get(f"http://svc.internal:{server.port}/page")
    assert resp.text == "hello from the page"
    assert lookups == ["svc.internal"]
    assert server.requests[0][1]["host"] == f"svc.internal:{server.port}"

    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]  # one bad answer is enough to refuse

    async with outbound.checked_client(resolver=rebinding) as client:
        with pytest.raises(outbound.AddressRefused, match=r"127\.0\.0\.1, a loopback"):
            await client.get(f"http://shop.example:{server.port}/page")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "address, refused",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("100.64.0.1", "not a public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("233.252.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::1", "loopback"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_address_classification(address: str, refused: str | None) -> None:
    why = outbound.refusal(ipaddress.ip_address(address))
    assert (why is None) if refused is None else (why is not None and refused in why), why
