"""http_get: fetch a URL whose host is on ORCH_HTTP_GET_ALLOWED_HOSTS (default: none).

Bounded whatever the server does: the body is streamed and reading stops at MAX_BODY_BYTES
(compressed bodies are inflated only up to that size), each redirect is checked against the
allow-list again (at most MAX_REDIRECTS), and every connection goes to an address checked
after resolution (durable_orchestrator/outbound.py): no loopback, private, link-local,
multicast, reserved or metadata address unless the operator named the host in
ORCH_HTTP_GET_PRIVATE_HOSTS."""

from __future__ import annotations

import zlib

import httpx
from pydantic import BaseModel, Field

from durable_orchestrator.outbound import AddressRefused, checked_client
from durable_orchestrator.tools.provenance import BRINGS_UNTRUSTED, SENDS_OUT
from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool

MAX_BODY_CHARS = 8_000
MAX_BODY_BYTES = 64 * 1024
MAX_REDIRECTS = 5
TRUNCATED = " […truncated]"


class HttpGetArgs(BaseModel):
    url: str = Field(min_length=1, max_length=2000, description="http(s) URL to fetch.")


def host_allowed(url: httpx.URL, allowed: list[str]) -> bool:
    host = (url.host or "").lower()
    for entry in allowed:
        entry = entry.lower()
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def _check_url(url: httpx.URL, allowed: list[str]) -> None:
    if url.scheme not in ("http", "https"):
        raise ToolError("only http and https URLs are allowed")
    if url.userinfo:
        raise ToolError("URLs with credentials are not allowed")
    if not host_allowed(url, allowed):
        raise ToolError(
            f"host {url.host!r} is not allowed (ORCH_HTTP_GET_ALLOWED_HOSTS: "
            f"{', '.join(allowed) or 'none configured'})"
        )


async def read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the decoded body, and whether there was more. Raw bytes are
    read and inflated here, bounded, rather than by httpx, which inflates whole chunks (a
    64 kB gzip chunk can inflate to 64 MB)."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise ToolError(f"unsupported content encoding {encoding!r}")
    inflater = None if encoding in ("", "identity") else zlib.decompressobj(wbits=47)
    out = bytearray()
    async for chunk in resp.aiter_raw():
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk, limit + 1 - len(out))
            except zlib.error as exc:
                raise ToolError(f"cannot decode the {encoding} body: {exc}") from None
        out += chunk
        if len(out) > limit or (inflater is not None and inflater.unconsumed_tail):
            return bytes(out[:limit]), True
    return bytes(out), False


@tool(
    REGISTRY,
    name="http_get",
    description="HTTP GET a URL on an allowed host; returns status and the start of the body.",
    args=HttpGetArgs,
    timeout_secs=15.0,
    # A page is anyone's text; and a URL can carry data out in its path or query.
    capabilities={BRINGS_UNTRUSTED, SENDS_OUT},
)
async def http_get(args: HttpGetArgs, ctx: ToolContext) -> str:
    try:
        url = httpx.URL(args.url)
    except httpx.InvalidURL as exc:
        raise ToolError(f"invalid URL: {exc}") from None
    allowed = ctx.settings.http_get_allowed_hosts
    _check_url(url, allowed)
    headers = {"Accept-Encoding": "gzip, deflate, identity"}
    try:
        async with checked_client(private_hosts=ctx.settings.http_get_private_hosts) as client:
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", url, headers=headers) as resp:
                    if resp.next_request is None:
                        body, more = await read_capped(resp, MAX_BODY_BYTES)
                        break
                    url = resp.next_request.url
                _check_url(url, allowed)  # every hop, before it is requested
            else:
                raise ToolError(f"more than {MAX_REDIRECTS} redirects")
    except AddressRefused as exc:
        raise ToolError(
            f"refused: {exc}; an operator can allow a named private host with "
            "ORCH_HTTP_GET_PRIVATE_HOSTS"
        ) from None
    text = body.decode(resp.encoding or "utf-8", errors="replace")
    if more or len(text) > MAX_BODY_CHARS:
        text = text[:MAX_BODY_CHARS] + TRUNCATED
    return f"HTTP {resp.status_code}\n{text}"
