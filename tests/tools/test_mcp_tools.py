"""Tools from real MCP servers (tests/tools/mcp_server_app.py, over stdio and streamable HTTP)
called by tasks on real Temporal + PostgreSQL, with the fake LLM scripting the calls."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from durable_orchestrator.mcp_tools.config import McpServerConfig
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import activity_runs, plan_reply, tool_messages
from tests.utils import running_stack

APP = str(Path(__file__).with_name("mcp_server_app.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        assert proc.poll() is None, "the MCP test server exited"
        assert time.monotonic() < deadline, "the MCP test server did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, APP, "http", str(port)],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(proc, port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()  # uvicorn's graceful stop would wait for clients' open streams
        proc.wait(10)


def stdio_server(**policy: Any) -> McpServerConfig:
    return McpServerConfig(name="files", command=sys.executable, args=[APP, "stdio"], **policy)


def _step_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.body and not r.body.get("response_format")]


async def test_stdio_tool_runs_as_one_run_tool_activity_and_is_listed(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    fake_llm.script(
        plan_reply(("researcher", "Find facts about Paris", [])),
        Reply(tool_calls=[("files_lookup", {"city": "Paris"})]),
        Reply(content="Paris lies on the Seine."),
    )
    server = stdio_server(
        agents=["researcher"], tools={"lookup": {"capabilities": {"reads_private": True, "sends_out": False}}}
    )
    async with running_stack(
        base_settings, temporal_client, fake_llm, mcp_servers=[server]
    ) as stack:
        task_id = await stack.submit("Tell me about Paris")
        task = await stack.wait(task_id)
        listed = (await stack.http.get("/tools", headers=stack.headers)).json()["items"]
        for_analyst = (await stack.http.get("/tools?agent=analyst", headers=stack.headers)).json()[
            "items"
        ]
        bad_agent = await stack.http.get("/tools?agent=nobody", headers=stack.headers)

    assert task["status"] == "completed", task
    (call,) = task["steps"][0]["tool_calls"]
    assert call["tool"] == "files_lookup" and call["status"] == "succeeded", call
    assert "river Seine" in call["result"]
    names = [a.name for a in await activity_runs(stack, task["workflow_id"])]
    assert names == ["plan_task", "run_step", "run_tool", "run_step"]

    # The LLM was offered the MCP tool with the server's schema, and read its result.
    first, second = _step_requests(fake_llm)
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert offered["files_lookup"]["parameters"]["properties"]["city"]["type"] == "string"
    assert "files_broken" not in offered  # its schema is malformed: skipped
    assert "calculator" in offered
    assert "river Seine" in tool_messages(second)[0]["content"]

    by_name = {t["name"]: t for t in listed}
    assert by_name["files_lookup"]["origin"] == "mcp:files"
    assert by_name["files_lookup"]["agents"] == ["researcher"]
    assert by_name["files_lookup"]["capabilities"] == {"reads_private": True}  # a false flag is none
    assert by_name["calculator"]["origin"] == "builtin"
    assert "researcher" in by_name["calculator"]["agents"]
    assert "files_broken" not in by_name
    assert "files_lookup" not in {t["name"] for t in for_analyst}
    assert "calculator" in {t["name"] for t in for_analyst}
    assert bad_agent.status_code == 422 and "agent" in bad_agent.json()["error"]["message"]


async def test_http_tool_arguments_are_checked_against_the_schema_before_the_call(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, http_server: str
) -> None:
    fake_llm.script(
        plan_reply(("analyst", "Compare cities", [])),
        Reply(
            tool_calls=[
                ("web_lookup", {"city": 5}),
                ("web_lookup", {"city": "Oslo"}),
                ("web_header", {"name": "X-Test"}),
            ]
        ),
        Reply(content="Oslo is smaller."),
    )
    server = McpServerConfig(
        name="web", url=http_server, headers={"X-Test": "1"}, prefix="web_", agents=["*"]
    )
    async with running_stack(
        base_settings, temporal_client, fake_llm, mcp_servers=[server]
    ) as stack:
        task = await stack.wait(await stack.submit("Compare Oslo"))

    assert task["status"] == "completed", task
    rejected, ok, header = task["steps"][0]["tool_calls"]
    assert header["result"] == "1"  # the configured header reached the server
    assert rejected["status"] == "rejected"
    assert "invalid arguments for 'web_lookup'" in rejected["error"] and "city" in rejected["error"]
    assert ok["status"] == "succeeded" and ok["result"] == "Oslo: population 0.7 million."
    names = [a.name for a in await activity_runs(stack, task["workflow_id"])]
    assert names.count("run_tool") == 2  # the invalid call never ran


async def test_an_mcp_tool_can_need_approval_like_a_builtin(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, http_server: str
) -> None:
    fake_llm.script(
        plan_reply(("writer", "Shout it", [])),
        Reply(tool_calls=[("web_shout", {"text": "hello"})]),
        Reply(content="Shouted."),
    )
    server = McpServerConfig(name="web", url=http_server, agents=["writer"], requires_approval=True)
    async with running_stack(
        base_settings, temporal_client, fake_llm, mcp_servers=[server]
    ) as stack:
        task_id = await stack.submit("Shout hello")
        await stack.wait(task_id, {"waiting_approval"})
        (pending,) = (
            await stack.http.get(f"/tasks/{task_id}/approvals", headers=stack.headers)
        ).json()["items"]
        assert pending["tool"] == "web_shout"
        resp = await stack.http.post(
            f"/tasks/{task_id}/approvals/{pending['approval_id']}",
            json={"decision": "approve"},
            headers=stack.headers,
        )
        assert resp.status_code < 300, resp.text
        task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    (call,) = task["steps"][0]["tool_calls"]
    assert call["status"] == "succeeded" and call["result"] == "HELLO"


async def test_huge_hanging_and_failing_tools_fail_clearly_and_the_task_goes_on(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, http_server: str
) -> None:
    fake_llm.script(
        plan_reply(("researcher", "Try the tools", [])),
        Reply(
            tool_calls=[
                ("web_huge", {"size": 50_000}),
                ("web_hang", {}),
                ("web_shout", {"text": ""}),
            ]
        ),
        Reply(content="Some tools failed."),
    )
    server = McpServerConfig(
        name="web", url=http_server, agents=["researcher"], tools={"hang": {"timeout_secs": 1}}
    )
    async with running_stack(
        base_settings,
        temporal_client,
        fake_llm,
        mcp_servers=[server],
        mcp_max_result_chars=1000,
        tool_max_attempts=1,
    ) as stack:
        task = await stack.wait(await stack.submit("Try them"))

    assert task["status"] == "completed", task
    huge, hang, shout = task["steps"][0]["tool_calls"]
    assert huge["status"] == "succeeded"
    assert huge["result"].startswith("x" * 1000) and "truncated" in huge["result"]
    assert len(huge["result"]) < 1200
    assert hang["status"] == "failed" and "timed out after 1s" in hang["error"]
    assert shout["status"] == "failed" and "text must not be empty" in shout["error"]
    contents = [m["content"] for m in tool_messages(_step_requests(fake_llm)[-1])]
    assert (
        "truncated" in contents[0]
        and "timed out" in contents[1]
        and "must not be empty" in contents[2]
    )


async def test_servers_that_are_down_or_hang_lose_only_their_own_tools(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    down = McpServerConfig(name="down", url=f"http://127.0.0.1:{_free_port()}/mcp", agents=["*"])
    missing = McpServerConfig(name="missing", command="/nonexistent/mcp-server", agents=["*"])
    hanging = McpServerConfig(
        name="hanging", url=f"http://127.0.0.1:{silent.getsockname()[1]}/mcp", agents=["*"]
    )
    fake_llm.script(
        plan_reply(("analyst", "Add", [])),
        Reply(tool_calls=[("calculator", {"expression": "2+2"})]),
        Reply(content="4"),
    )
    try:
        async with running_stack(
            base_settings,
            temporal_client,
            fake_llm,
            mcp_servers=[down, missing, hanging],
            mcp_connect_timeout_secs=1,
        ) as stack:
            task = await stack.wait(await stack.submit("2+2?"))
            listed = (await stack.http.get("/tools", headers=stack.headers)).json()["items"]
    finally:
        silent.close()
    assert task["status"] == "completed", task
    assert task["steps"][0]["tool_calls"][0]["result"] == "4"
    offered = {t["function"]["name"] for t in _step_requests(fake_llm)[0]["tools"]}
    assert not {n for n in offered if n.startswith(("down_", "missing_", "hanging_"))}
    assert {t["origin"] for t in listed} >= {"builtin"}
    assert not {t["origin"] for t in listed} & {"mcp:down", "mcp:missing", "mcp:hanging"}
