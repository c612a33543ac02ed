"""Cancelling a task over the API ends it `cancelled` wherever it is: while the planner's LLM
call is in flight, and while a tool runs (the cancel reaches the tool through run_tool's
heartbeats). Real Temporal, real Postgres, the fake LLM over HTTP; the other Python versions
run the planning case in tests/workflows/test_python_versions.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from temporalio.client import Client

from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import REGISTRY, ToolContext
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import plan_reply
from tests.utils import Stack, running_stack


async def _until(probe, what: str, within: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, f"{what} never happened"
        await asyncio.sleep(0.05)


async def _cancel(stack: Stack, task_id: str) -> None:
    resp = await stack.http.post(f"/tasks/{task_id}/cancel", headers=stack.headers)
    assert resp.status_code == 202, resp.text


async def test_cancel_while_planning_records_cancelled(stack: Stack) -> None:
    stack.fake.script(Reply(delay=30))  # the planner's call is held until the client goes away
    task_id = await stack.submit("Write a long essay on the history of tea")
    await _until(lambda: stack.fake.requests, "the planner's LLM call")

    await _cancel(stack, task_id)
    task = await stack.wait(task_id)

    assert task["status"] == "cancelled", task
    assert task["error"] == "cancelled by request"
    assert task["steps"] == []  # nothing was planned
    # The planner's call was interrupted: the client hung up before the fake answered.
    (plan_call,) = stack.fake.requests
    await _until(lambda: plan_call.responded_monotonic is not None, "the held reply's end")
    assert plan_call.status is None


@dataclasses.dataclass
class HeldTool:
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    cancelled: bool = False


@pytest.fixture
def held_current_time() -> Iterator[HeldTool]:
    """current_time, replaced by a handler that never returns on its own (and a long timeout),
    so only a cancel delivered to the running activity can end it."""
    original = REGISTRY.tools["current_time"]
    held = HeldTool()

    async def hold(args: BaseModel, ctx: ToolContext) -> str:
        held.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            held.cancelled = True
            raise
        return "unreachable"

    REGISTRY.tools["current_time"] = dataclasses.replace(original, handler=hold, timeout_secs=120)
    try:
        yield held
    finally:
        REGISTRY.tools["current_time"] = original


async def test_cancel_reaches_a_running_tool(
    base_settings: Settings,
    temporal_client: Client,
    fake_llm: FakeOpenAI,
    held_current_time: HeldTool,
) -> None:
    fake_llm.script(
        plan_reply(("analyst", "Tell the time", [])),
        Reply(tool_calls=[("current_time", {"timezone": "UTC"})]),
    )
    async with running_stack(
        base_settings, temporal_client, fake_llm, tool_heartbeat_timeout_secs=2
    ) as stack:
        task_id = await stack.submit("What time is it?")
        await asyncio.wait_for(held_current_time.started.wait(), 30)

        await _cancel(stack, task_id)
        task = await stack.wait(task_id)
        assert task["status"] == "cancelled", task
        # The tool itself was interrupted, not just abandoned by the workflow (its start-to-close
        # timeout is over two minutes: without heartbeats nothing would reach it before).
        await _until(lambda: held_current_time.cancelled, "the tool's cancellation", within=20)
        (call,) = task["steps"][0]["tool_calls"]
        assert call["tool"] == "current_time"
        assert call["status"] not in {"succeeded", "failed"}
