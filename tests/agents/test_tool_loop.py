"""The tool-calling loop over real Temporal + Postgres + the fake LLM scripting tool calls."""

from __future__ import annotations

from temporalio.client import Client

from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import REGISTRY
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import (
    activity_runs,
    ledger,
    local_activity_names,
    plan_reply,
    tool_messages,
)
from tests.utils import Stack, running_stack


async def test_researcher_calls_calculator_then_answers(stack: Stack) -> None:
    stack.fake.script(
        plan_reply(("researcher", "Add the numbers", [])),
        Reply(tool_calls=[("calculator", {"expression": "2+3"})]),
        Reply(content="The sum is 5."),
    )
    before = REGISTRY.executions["calculator"]
    task_id = await stack.submit("What is 2+3?")
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    assert task["result"] == "The sum is 5."
    (step,) = task["steps"]
    assert step["status"] == "completed"
    (call,) = step["tool_calls"]
    assert call["tool"] == "calculator"
    assert call["status"] == "succeeded"
    assert call["result"] == "5"
    assert call["turn"] == 0 and call["latency_ms"] is not None
    assert '"2+3"' in call["arguments"]
    assert REGISTRY.executions["calculator"] == before + 1

    # The second LLM turn saw the tool result, answered to the call id the model chose, and
    # was offered the researcher's tools in the openai format.
    step_requests = [r for r in stack.fake.requests if r.body and not r.body.get("response_format")]
    assert len(step_requests) == 2
    offered = {t["function"]["name"] for t in step_requests[0].body["tools"]}
    assert {"calculator", "memory_search", "write_note"} <= offered
    assert "send_email" not in offered
    (tool_msg,) = tool_messages(step_requests[1].body)
    assert tool_msg["content"] == "5"
    assert tool_msg["tool_call_id"] == call["call_id"]

    # Ledger == what the fake reported, exactly; one row per LLM call.
    rows = await ledger(stack, task_id)
    assert [r.purpose for r in rows] == ["plan", "step", "step"]
    prompt, completion = stack.fake.successful_usage()
    assert sum(r.prompt_tokens for r in rows) == prompt
    assert sum(r.completion_tokens for r in rows) == completion
    assert task["cost"]["prompt_tokens"] == prompt
    assert step["cost"]["prompt_tokens"] + rows[0].prompt_tokens == prompt

    # One activity per LLM turn and one per tool call; the bookkeeping at the end (finish)
    # runs as a local activity, recorded as markers rather than activity events.
    names = [a.name for a in await activity_runs(stack, task["workflow_id"])]
    assert names == ["plan_task", "run_step", "run_tool", "run_step"]
    local = await local_activity_names(stack, task["workflow_id"])
    assert local[0] == "finish_task" and local.count("finish_task") == 1


async def test_invalid_unknown_and_forbidden_tool_calls_are_rejected_never_run(stack: Stack) -> None:
    stack.fake.script(
        plan_reply(("researcher", "Look things up", [])),
        Reply(
            tool_calls=[
                ("calculator", {"expression": 42}),  # invalid: must be a string
                ("launch_rockets", {"count": 3}),  # not registered
                ("send_email", {"to": "a@example.com", "subject": "s", "body": "b"}),  # not a researcher tool
            ]
        ),
        Reply(content="I could not use those tools."),
    )
    before = dict(REGISTRY.executions)
    task_id = await stack.submit("Try some tools")
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    (step,) = task["steps"]
    assert step["status"] == "completed"
    calls = step["tool_calls"]
    assert [c["status"] for c in calls] == ["rejected"] * 3
    assert "invalid arguments for 'calculator'" in calls[0]["error"]
    assert "unknown tool 'launch_rockets'" in calls[1]["error"]
    assert "not allowed for this agent" in calls[2]["error"]
    # Never executed: no handler ran, no run_tool activity was scheduled.
    assert dict(REGISTRY.executions) == before
    names = [a.name for a in await activity_runs(stack, task["workflow_id"])]
    assert "run_tool" not in names
    assert names.count("run_step") == 2

    # The LLM saw each error as the result of its call.
    last = [r for r in stack.fake.requests if r.body and not r.body.get("response_format")][-1]
    contents = [m["content"] for m in tool_messages(last.body)]
    assert len(contents) == 3
    assert "invalid arguments" in contents[0]
    assert "unknown tool" in contents[1]
    assert "not allowed" in contents[2]


async def test_tool_error_goes_back_to_the_llm_and_max_turns_ends_the_loop(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    # http_get with no allowed hosts fails in the handler (a ToolError, not a retry); the
    # model keeps asking for tools, and the last allowed turn is offered no tools at all.
    fake_llm.script(
        plan_reply(("researcher", "Fetch a page", [])),
        *[Reply(tool_calls=[("http_get", {"url": "http://127.0.0.1:9/x"})]) for _ in range(2)],
    )
    async with running_stack(base_settings, temporal_client, fake_llm, max_turns=3) as stack:
        task_id = await stack.submit("Fetch it")
        task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    calls = task["steps"][0]["tool_calls"]
    assert [c["status"] for c in calls] == ["failed", "failed"]
    assert "not allowed" in calls[0]["error"]
    step_requests = [r for r in stack.fake.requests if r.body and not r.body.get("response_format")]
    assert len(step_requests) == 3  # max_turns=3
    assert "tools" not in step_requests[-1].body
    assert "error: host" in tool_messages(step_requests[-1].body)[-1]["content"]
