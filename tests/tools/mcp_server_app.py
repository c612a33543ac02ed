"""A real MCP server for the tests, written with the SDK's server API (MCPServer, the SDK 2
name of FastMCP). Run `python tests/tools/mcp_server_app.py stdio` or `... http PORT`.

Tools: `lookup` (a fixed fact per city), `shout` (fails for empty text), `huge` (a result far
over any cap), `hang` (never answers), `broken` (listed with a malformed input schema) and
`grow` (adds a tool `echo` and tells subscribers the tool list changed), `header` (the value of
a request header the client sent)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import mcp_types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

FACTS = {
    "paris": "Paris: population 2.1 million, river Seine.",
    "oslo": "Oslo: population 0.7 million.",
}


class TestServer(MCPServer):
    async def list_tools(self) -> list[mcp_types.Tool]:
        tools = await super().list_tools()
        broken = mcp_types.Tool(
            name="broken",
            description="Listed with an input schema that is not JSON Schema.",
            input_schema={"type": "object", "properties": {"x": {"type": "not-a-type"}}},
        )
        return [*tools, broken]


server = TestServer("test-tools")


@server.tool(description="Look up a fact about a city.")
def lookup(city: str) -> str:
    return FACTS.get(city.lower(), f"no facts about {city}")


@server.tool(description="Upper-case a text; fails on empty text.")
def shout(text: str) -> str:
    if not text:
        raise ToolError("text must not be empty")
    return text.upper()


@server.tool(description="Return a very long text.")
def huge(size: int = 200_000) -> str:
    return "x" * size


@server.tool(description="Never answers.")
async def hang() -> str:
    await asyncio.Event().wait()
    return "unreachable"


@server.tool(description="The value of an HTTP request header (streamable HTTP only).")
def header(name: str, ctx: Context) -> str:
    request = ctx.request_context.request
    return request.headers.get(name, "(absent)") if request is not None else "(not HTTP)"


def echo(text: str) -> str:
    return text


@server.tool(description="Add the tool `echo` to this server.")
async def grow(ctx: Context) -> str:
    server.add_tool(echo, description="Echo a text.")
    await ctx.notify_tools_changed()
    return "grown"


def main(argv: list[str]) -> Any:
    if argv[1] == "stdio":
        return server.run("stdio")
    return asyncio.run(server.run_streamable_http_async(host="127.0.0.1", port=int(argv[2])))


if __name__ == "__main__":
    main(sys.argv)
