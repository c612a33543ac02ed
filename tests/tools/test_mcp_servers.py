"""The worker's MCP connections against real servers (no Temporal needed): tool-list changes,
a server that dies and comes back; and the configuration and schema checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import mcp_types
import pytest

from durable_orchestrator.mcp_tools.config import McpServerConfig
from durable_orchestrator.mcp_tools.servers import McpServers, McpUnavailable
from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import REGISTRY, ToolRejected
from tests.tools.test_mcp_tools import APP, _free_port, stdio_server, wait_for_port

AGENTS = ["researcher", "analyst", "writer", "reviewer"]


async def _until(predicate, what: str, within: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_changed_tool_list_is_registered_without_a_restart() -> None:
    registry = REGISTRY.layered()
    hub = McpServers(
        [stdio_server(agents=["*"])], registry, known_agents=AGENTS, refresh_interval_secs=300
    )
    await hub.start()
    try:
        assert "files_echo" not in registry.tools
        assert await hub.call("files", "grow", {}) == "grown"

        async def registered() -> bool:
            return "files_echo" in registry.tools

        await _until(registered, "the new tool was not registered after the server announced it")
        tool, args = registry.validate(
            "files_echo", '{"text": "hi"}', registry.allowed_for("writer", ())
        )
        assert tool.origin == "mcp:files" and args == {"text": "hi"}
        assert "files_echo" not in REGISTRY.tools  # the process-wide built-ins are untouched
    finally:
        await hub.close()


async def test_a_server_that_dies_fails_calls_clearly_and_is_reconnected() -> None:
    port = _free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, APP, "http", str(port)],
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(proc, port)
        return proc

    proc = start()
    server = McpServerConfig(name="web", url=f"http://127.0.0.1:{port}/mcp", agents=["*"])
    hub = McpServers([server], REGISTRY.layered(), known_agents=AGENTS, refresh_interval_secs=0.5)
    try:
        await hub.start()
        assert await hub.call("web", "lookup", {"city": "oslo"}) == "Oslo: population 0.7 million."
        proc.kill()  # a crash: no goodbye to the client
        proc.wait(10)
        with pytest.raises(McpUnavailable, match="MCP server 'web'"):
            await hub.call("web", "lookup", {"city": "oslo"})
        proc = start()

        async def answers() -> bool:
            try:
                return await hub.call("web", "lookup", {"city": "paris"}) != ""
            except McpUnavailable:
                return False

        await _until(answers, "the server was not reconnected")
        assert hub.status() == {"web": None}
    finally:
        await hub.close()
        proc.kill()
        proc.wait(10)


def _tool(name: str, schema: object) -> mcp_types.Tool:
    return mcp_types.Tool.model_construct(name=name, description="d", input_schema=schema)


def test_tools_with_bad_schemas_or_names_are_skipped_the_rest_registered() -> None:
    registry = REGISTRY.layered()
    cfg = McpServerConfig(name="x", url="http://127.0.0.1:9/mcp", prefix="", agents=["analyst"])
    hub = McpServers([cfg], registry, known_agents=AGENTS)
    good = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tools = hub._tools_of(
        cfg,
        [
            _tool("search", good),
            _tool("not_object", {"type": "array"}),
            _tool("not_a_schema", {"type": "object", "properties": {"q": {"type": 7}}}),
            _tool("not_a_dict", "nope"),
            _tool("has space", good),
            _tool("calculator", good),  # a built-in's name, without a prefix
        ],
    )
    assert [t.name for t in tools] == ["search"]
    registry.replace_origin("mcp:x", tools)
    assert registry.allowed_for("analyst", ("calculator",)) == ("calculator", "search")
    assert "search" not in registry.allowed_for("writer", ("write_note",))
    with pytest.raises(
        ToolRejected, match=r"invalid arguments for 'search': arguments: 'q' is a required property"
    ):
        registry.validate("search", "{}", ("search",))
    with pytest.raises(ToolRejected, match=r"q: 5 is not of type 'string'"):
        registry.validate("search", '{"q": 5}', ("search",))
    assert registry.openai_tools(["search"])[0]["function"]["parameters"] == good


def test_per_tool_policy_overrides_the_server() -> None:
    cfg = McpServerConfig(
        name="tickets",
        command="tickets-mcp",
        agents=["analyst"],
        timeout_secs=20,
        tools={
            "close": {
                "agents": ["writer"],
                "requires_approval": True,
                "timeout_secs": 5,
                "capabilities": {"sends_out": True},
            },
            "drop": {"enabled": False},
        },
    )
    close, other, drop = cfg.policy("close"), cfg.policy("list"), cfg.policy("drop")
    assert (close.agents, close.requires_approval, close.timeout_secs) == (["writer"], True, 5)
    assert close.capabilities == {"sends_out": True}
    assert (other.agents, other.requires_approval, other.timeout_secs) == (["analyst"], False, 20)
    assert drop.enabled is False
    assert (
        cfg.name_prefix == "tickets_" and cfg.origin == "mcp:tickets" and cfg.transport == "stdio"
    )


def test_bad_configuration_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set exactly one of `command` \\(stdio\\) or `url`"):
        Settings(mcp_servers=[{"name": "a"}])
    with pytest.raises(ValueError, match="mcp_servers"):
        Settings(mcp_servers=[{"name": "a", "url": "http://h/mcp", "agnets": ["x"]}])
    with pytest.raises(ValueError, match="server names must be unique; repeated: a"):
        Settings(mcp_servers=[{"name": "a", "url": "http://h/mcp"}, {"name": "a", "command": "x"}])
    with pytest.raises(ValueError, match=r"server 'a' tools.t.agents: unknown agent 'nobody'"):
        McpServers(
            [McpServerConfig(name="a", command="x", tools={"t": {"agents": ["nobody"]}})],
            REGISTRY.layered(),
            known_agents=AGENTS,
        )
    broken = tmp_path / "servers.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"ORCH_MCP_SERVERS_FILE: .* is not valid"):
        Settings(mcp_servers_file=broken)
    with pytest.raises(ValueError, match="ORCH_MCP_SERVERS_FILE: cannot read"):
        Settings(mcp_servers_file=tmp_path / "missing.yaml")


def test_servers_file_in_yaml_or_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "mcp.yaml"
    yaml_file.write_text(
        "servers:\n"
        "  - name: files\n    command: files-mcp\n    args: [--root, /data]\n    agents: [researcher]\n"
        "  - name: search\n    url: http://127.0.0.1:8931/mcp\n    headers: {Authorization: Bearer t}\n"
    )
    settings = Settings(mcp_servers=[{"name": "env", "command": "x"}], mcp_servers_file=yaml_file)
    assert [s.name for s in settings.mcp_servers] == ["env", "files", "search"]
    assert settings.mcp_servers[1].args == ["--root", "/data"]
    assert "Bearer" not in repr(settings.mcp_servers[2])  # headers may hold credentials
    json_file = tmp_path / "mcp.json"
    json_file.write_text(json.dumps([{"name": "files", "command": "files-mcp"}]))
    assert Settings(mcp_servers_file=json_file).mcp_servers[0].transport == "stdio"
