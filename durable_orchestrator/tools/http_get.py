"""http_get: fetch a URL whose host is on ORCH_HTTP_GET_ALLOWED_HOSTS (default: none)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, Field

from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool

MAX_BODY_CHARS = 8_000


class HttpGetArgs(BaseModel):
    url: str = Field(min_length=1, max_length=2000, description="http(s) URL to fetch.")


def host_allowed(url: httpx.URL, allowed: list[str]) -> bool:
    host = (url.host or "").lower()
    for entry in allowed:
        entry = entry.lower()
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


@tool(
    REGISTRY,
    name="http_get",
    description="HTTP GET a URL on an allowed host; returns status and the start of the body.",
    args=HttpGetArgs,
    timeout_secs=15.0,
)
async def http_get(args: HttpGetArgs, ctx: ToolContext) -> str:
    try:
        url = httpx.URL(args.url)
    except httpx.InvalidURL as exc:
        raise ToolError(f"invalid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ToolError("only http and https URLs are allowed")
    allowed = ctx.settings.http_get_allowed_hosts
    if not host_allowed(url, allowed):
        raise ToolError(
            f"host {url.host!r} is not allowed (ORCH_HTTP_GET_ALLOWED_HOSTS: "
            f"{', '.join(allowed) or 'none configured'})"
        )
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        resp = await client.get(url)
    body = resp.text
    if len(body) > MAX_BODY_CHARS:
        body = body[:MAX_BODY_CHARS] + " […truncated]"
    return f"HTTP {resp.status_code}\n{body}"
