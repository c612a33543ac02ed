"""The worker's connections to its MCP servers, and their tools in the worker's registry.

One long-lived task per server owns its connection (the SDK's client must be entered and left
in one task): it connects, lists the tools, registers them beside the built-ins, then re-lists
when the server says its tools changed (`notifications/tools/list_changed`) or every
`ORCH_MCP_REFRESH_INTERVAL_SECS`. A server that is down, slow or broken only loses its own
tools: worker start waits at most `ORCH_MCP_CONNECT_TIMEOUT_SECS` for it, and the task keeps
reconnecting in the background. Calls run in the tool activity over the shared connection.

Each registered set is handed to `publish` (the worker writes it to PostgreSQL, where
`GET /tools` reads it: the API never connects to an MCP server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx2
import mcp_types
import structlog
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED, REQUEST_TIMEOUT
from pydantic import ValidationError

from durable_orchestrator.mcp_tools.config import TOOL_NAME_PATTERN, McpServerConfig
from durable_orchestrator.mcp_tools.results import capped, result_text, schema_problem
from durable_orchestrator.tools.registry import Tool, ToolContext, ToolError, ToolRegistry

log = structlog.get_logger(__name__)

Publish = Callable[[str, list[Tool]], Awaitable[None]]
_NAME_OK = re.compile(TOOL_NAME_PATTERN)
_MAX_DESCRIPTION = 1024
_CONNECTION_ERRORS = (CONNECTION_CLOSED, REQUEST_TIMEOUT)


class McpUnavailable(Exception):
    """The server is not connected right now; Temporal retries the call, then the LLM reads this."""


@dataclass
class _Connection:
    config: McpServerConfig
    client: Client | None = None
    error: str | None = "not connected yet"
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)


class McpServers:
    def __init__(
        self,
        configs: Iterable[McpServerConfig],
        registry: ToolRegistry,
        *,
        known_agents: Iterable[str],
        connect_timeout_secs: float = 10.0,
        refresh_interval_secs: float = 300.0,
        max_result_chars: int = 16_000,
        publish: Publish | None = None,
    ) -> None:
        self.registry = registry
        self.connect_timeout = connect_timeout_secs
        self.refresh_interval = refresh_interval_secs
        self.max_result_chars = max_result_chars
        self.publish = publish
        self._conns = {c.name: _Connection(c) for c in configs}
        self._tasks: list[asyncio.Task[None]] = []
        _check_agents(self._conns.values(), set(known_agents))

    # --- lifetime ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to every server; return once each has listed its tools or failed to."""
        for conn in self._conns.values():
            self._tasks.append(
                asyncio.create_task(self._supervise(conn), name=f"mcp:{conn.config.name}")
            )
        await asyncio.gather(*(c.first_attempt.wait() for c in self._conns.values()))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=10)
            for t in stuck:
                log.warning("mcp_server_close_timeout", task=t.get_name())
        self._tasks.clear()

    def status(self) -> dict[str, str | None]:
        """Server name -> None when connected, else why not."""
        return {name: c.error for name, c in self._conns.items()}

    async def _supervise(self, conn: _Connection) -> None:
        cfg = conn.config
        backoff = 1.0
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with asyncio.timeout(self.connect_timeout):
                        client = await stack.enter_async_context(self._client(conn, stack))
                        await self._list_and_register(conn, client)
                    conn.client, conn.error, backoff = client, None, 1.0
                    conn.first_attempt.set()
                    listener = asyncio.create_task(_listen_for_changes(client, conn))
                    stack.push_async_callback(_cancel, listener)
                    while True:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(conn.changed.wait(), self.refresh_interval)
                        conn.changed.clear()
                        async with asyncio.timeout(self.connect_timeout):
                            await self._list_and_register(conn, client)
            except BaseException as exc:  # anything a server does ends only its own connection
                if _we_are_stopping(exc):
                    raise
                conn.client, conn.error = None, _describe(exc)
                log.warning(
                    "mcp_server_unavailable",
                    server=cfg.name,
                    error=conn.error,
                    retry_in_secs=backoff,
                )
            conn.first_attempt.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.refresh_interval)

    def _client(self, conn: _Connection, stack: contextlib.AsyncExitStack) -> Client:
        cfg = conn.config

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                conn.changed.set()

        if cfg.command:
            params = StdioServerParameters(
                command=cfg.command, args=cfg.args, env=cfg.env or None, cwd=cfg.cwd
            )
            server: Any = stdio_client(params, errlog=_stderr_to_log(cfg.name, stack))
        else:
            assert cfg.url is not None
            # The SDK's own timeouts: a server may hold a response stream open for minutes.
            http = httpx2.AsyncClient(
                headers=cfg.headers or None, timeout=httpx2.Timeout(30.0, read=300.0)
            )
            stack.push_async_callback(http.aclose)
            server = streamable_http_client(cfg.url, http_client=http)
        # The SDK's response cache would serve a stale tools/list after a change; re-lists ask.
        return Client(server, message_handler=on_message, cache=None)

    # --- tools ---------------------------------------------------------------------------------
    async def _list_and_register(self, conn: _Connection, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(50):  # pages
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        tools = self._tools_of(conn.config, listed)
        self.registry.replace_origin(conn.config.origin, tools)
        log.info("mcp_tools_registered", server=conn.config.name, tools=[t.name for t in tools])
        if self.publish is not None:
            await self.publish(conn.config.origin, tools)

    def _tools_of(self, cfg: McpServerConfig, listed: list[mcp_types.Tool]) -> list[Tool]:
        tools: list[Tool] = []
        for remote in listed:
            policy = cfg.policy(remote.name)
            if not policy.enabled:
                continue
            name = cfg.name_prefix + remote.name
            problem = schema_problem(remote.input_schema)
            if not _NAME_OK.match(name):
                problem = f"registered name {name!r} does not match {TOOL_NAME_PATTERN}"
            elif (
                other := self.registry.tools.get(name)
            ) is not None and other.origin != cfg.origin:
                problem = f"name {name!r} is taken by {other.origin}; set a `prefix` for server {cfg.name!r}"
            if problem:
                log.warning("mcp_tool_skipped", server=cfg.name, tool=remote.name, reason=problem)
                continue
            tools.append(
                Tool(
                    name=name,
                    description=(remote.description or remote.title or remote.name)[
                        :_MAX_DESCRIPTION
                    ],
                    args=None,
                    handler=self._handler(cfg.name, remote.name),
                    timeout_secs=float(policy.timeout_secs or cfg.timeout_secs),
                    requires_approval=bool(policy.requires_approval),
                    origin=cfg.origin,
                    json_schema=dict(remote.input_schema),
                    agents=tuple(policy.agents or ()),
                    capabilities=frozenset(k for k, on in policy.capabilities.items() if on),
                )
            )
        return tools

    def _handler(
        self, server: str, remote_name: str
    ) -> Callable[[Any, ToolContext], Awaitable[str]]:
        async def call(args: dict[str, Any], ctx: ToolContext) -> str:
            return await self.call(server, remote_name, args)

        return call

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> str:
        conn = self._conns[server]
        if conn.client is None:
            raise McpUnavailable(f"MCP server {server!r} is not connected ({conn.error})")
        try:
            result = await conn.client.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code in _CONNECTION_ERRORS:
                conn.changed.set()
                raise McpUnavailable(
                    f"MCP server {server!r} did not answer {tool!r}: {exc.error.message}"
                ) from None
            # The server refused the call: retrying will not help.
            raise ToolError(
                f"MCP server {server!r} refused {tool!r}: {exc.error.message}"
            ) from None
        except ValidationError as exc:  # the answer does not fit the protocol
            raise ToolError(
                f"MCP server {server!r} sent a malformed result for {tool!r}: {_describe(exc)}"
            ) from None
        except Exception as exc:  # the connection failed; the server's task reconnects
            conn.changed.set()
            raise McpUnavailable(
                f"MCP server {server!r} did not answer {tool!r}: {_describe(exc)}"
            ) from None
        text = capped(result_text(result), self.max_result_chars)
        if result.is_error:
            raise ToolError(f"MCP tool {tool!r} on {server!r} reported an error: {text}")
        return text


async def _listen_for_changes(client: Client, conn: _Connection) -> None:
    """Servers on the 2026-07-28 protocol announce tool changes on a `subscriptions/listen`
    stream; older ones send `notifications/tools/list_changed` (the client's message handler).
    Either way the server's task re-lists; without either, the periodic re-list still does."""
    try:
        async with client.listen(tools_list_changed=True) as events:
            async for _event in events:
                conn.changed.set()
    except ListenNotSupportedError:
        return
    except Exception as exc:  # a dropped stream: re-list now, which reconnects if need be
        log.info("mcp_listen_ended", server=conn.config.name, error=_describe(exc))
        conn.changed.set()


def _we_are_stopping(exc: BaseException) -> bool:
    """Our own cancellation (close, worker shutdown), possibly wrapped by the SDK's task groups,
    as opposed to the SDK cancelling its own work because the connection failed."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])  # not `await task`: that would swallow our own cancellation


def _stderr_to_log(server: str, stack: contextlib.AsyncExitStack) -> TextIO:
    """A pipe for a stdio server's stderr whose lines become log events (`mcp_server_stderr`),
    so the worker's stderr stays one JSON object per line. Our end closes with the connection;
    the reader stops when the server process is gone too."""
    read_fd, write_fd = os.pipe()
    errlog = os.fdopen(write_fd, "w")
    stack.callback(errlog.close)

    def forward() -> None:
        with os.fdopen(read_fd, errors="replace") as lines:
            for line in lines:
                if line.strip():
                    log.info("mcp_server_stderr", server=server, line=line.rstrip()[:2000])

    threading.Thread(target=forward, name=f"mcp-stderr-{server}", daemon=True).start()
    return errlog


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer within ORCH_MCP_CONNECT_TIMEOUT_SECS"
    return f"{type(exc).__name__}: {exc}"[:500]


def _check_agents(conns: Iterable[_Connection], known: set[str]) -> None:
    for conn in conns:
        cfg = conn.config
        named = [("agents", a) for a in cfg.agents]
        named += [(f"tools.{t}.agents", a) for t, p in cfg.tools.items() for a in (p.agents or [])]
        for where, agent in named:
            if agent != "*" and agent not in known:
                raise ValueError(
                    f"ORCH_MCP_SERVERS: server {cfg.name!r} {where}: unknown agent {agent!r}; "
                    f"registered: {', '.join(sorted(known))} (or '*')"
                )


def catalog_row(tool: Tool) -> dict[str, Any]:
    """A registered MCP tool as a `tool_catalog` row."""
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters(),
        "agents": list(tool.agents),
        "requires_approval": tool.requires_approval,
        "timeout_secs": tool.timeout_secs,
        "capabilities": dict.fromkeys(sorted(tool.capabilities), True),
    }
