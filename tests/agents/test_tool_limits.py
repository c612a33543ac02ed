"""Limits of the tool loop on real Temporal + Postgres + the fake LLM: tool calls per LLM turn
are capped (the excess is answered with an error naming the limit, never run), and a long tool
loop continues as new, carrying the plan, the finished steps and each step's turn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from durable_orchestrator.devstack import TemporalDevServer
from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import REGISTRY
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import activity_runs, ledger, plan_reply, tool_messages
from tests.utils import running_stack
from workflows.task_workflow import TaskWorkflow


def _step_requests(fake: FakeOpenAI) -> list:  # type: ignore[type-arg]
    return [r for r in fake.requests if r.body and not r.body.get("response_format")]


async def test_tool_calls_beyond_the_per_turn_cap_are_answered_not_run(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    fake_llm.script(
        plan_reply(("analyst", "Add things up", [])),
        Reply(tool_calls=[("calculator", {"expression": f"{n}+1"}) for n in range(5)]),
        Reply(content="Sums done."),
    )
    before = REGISTRY.executions["calculator"]
    async with running_stack(
        base_settings, temporal_client, fake_llm, max_tool_calls_per_turn=2
    ) as stack:
        task = await stack.wait(await stack.submit("Add some numbers"))
        assert task["status"] == "completed", task
        names = [a.name for a in await activity_runs(stack, task["workflow_id"])]

    (step,) = task["steps"]
    calls = step["tool_calls"]
    assert [c["status"] for c in calls] == ["succeeded"] * 2 + ["rejected"] * 3
    assert [c["result"] for c in calls[:2]] == ["1", "2"]
    for c in calls[2:]:
        assert "at most 2 run per turn (ORCH_MAX_TOOL_CALLS_PER_TURN)" in c["error"], c
    assert REGISTRY.executions["calculator"] == before + 2  # the excess never ran
    assert names.count("run_tool") == 2

    # The model got an answer for every call it made, the excess ones naming the limit.
    contents = [m["content"] for m in tool_messages(_step_requests(fake_llm)[-1].body)]
    assert contents[:2] == ["1", "2"]
    assert len(contents) == 5
    assert all("ORCH_MAX_TOOL_CALLS_PER_TURN" in c for c in contents[2:])


async def _runs(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow, first to last, following its continue-as-new links."""
    latest = await client.get_workflow_handle(workflow_id).fetch_history()
    start = latest.events[0].workflow_execution_started_event_attributes
    run_id: str | None = start.first_execution_run_id
    histories = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


def _input(history: WorkflowHistory) -> dict:  # type: ignore[type-arg]
    attrs = history.events[0].workflow_execution_started_event_attributes
    return json.loads(attrs.input.payloads[0].data)


def _activities(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_long_tool_loop_continues_as_new_and_finishes(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    tool_turns = 4
    fake_llm.script(
        plan_reply(("analyst", "Sketch the figures", []), ("analyst", "Add them up", [0])),
        Reply(content="Figures: 1, 2, 3, 4."),  # step 0 answers at once
        *[Reply(tool_calls=[("calculator", {"expression": f"{t}*10"})]) for t in range(tool_turns)],
        Reply(content="Total: 60."),
    )
    before = REGISTRY.executions["calculator"]
    async with running_stack(
        # About a dozen history events per tool turn: this forces a hand-over every turn or two.
        base_settings,
        temporal_client,
        fake_llm,
        continue_as_new_events=30,
        max_turns=8,
    ) as stack:
        task = await stack.wait(await stack.submit("Add up the figures"))
        assert task["status"] == "completed", task
        await stack.client.get_workflow_handle(task["workflow_id"]).result()
        runs = await _runs(stack.client, task["workflow_id"])
        rows = await ledger(stack, task["id"])

    assert task["result"] == "Total: 60."
    assert [s["status"] for s in task["steps"]] == ["completed", "completed"]
    assert task["steps"][0]["output"] == "Figures: 1, 2, 3, 4."
    calls = task["steps"][1]["tool_calls"]
    # Each tool turn ran exactly once across the runs, in order, none repeated or skipped.
    assert [(c["turn"], c["result"]) for c in calls] == [
        (t, str(t * 10)) for t in range(tool_turns)
    ]
    assert REGISTRY.executions["calculator"] == before + tool_turns
    assert [r.purpose for r in rows] == ["plan", "step"] + ["step"] * (tool_turns + 1)

    assert len(runs) >= 2, "the loop never continued as new"
    for history in runs[:-1]:
        assert (
            history.events[-1].event_type
            == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        )
    assert runs[-1].events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    # Planned once: the continued runs got the plan with their input, and step 0's result.
    assert [_activities(h).count("plan_task") for h in runs] == [1] + [0] * (len(runs) - 1)
    first_start = _input(runs[0])
    assert first_start["resume"] is None
    for n, history in enumerate(runs[1:], start=2):
        resume = _input(history)["resume"]
        assert resume["runs"] == n
        assert [s["index"] for s in resume["steps"]] == [0, 1]
        assert 0 in [d["index"] for d in resume["done"]]
        assert resume["started_at"] == _input(runs[1])["resume"]["started_at"]  # one deadline
    # Every run replays with the current workflow code.
    for history in runs:
        result = await Replayer(workflows=[TaskWorkflow]).replay_workflow(
            history, raise_on_replay_failure=False
        )
        assert result.replay_failure is None


class SuggestingDevServer(TemporalDevServer):
    """A dev server that suggests continue-as-new once a history has 30 events (the server's
    own `limit.historyCount.suggestContinueAsNew`, 4096 by default)."""

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=30",
        ]


@pytest.fixture
def suggesting_server(tmp_path: Path) -> Iterator[TemporalDevServer]:
    server = SuggestingDevServer(tmp_path / "temporal.db", ui=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_tool_loop_continues_as_new_when_temporal_suggests_it(
    base_settings: Settings, fake_llm: FakeOpenAI, suggesting_server: TemporalDevServer
) -> None:
    """No threshold of ours: the hand-over follows the server's suggestion alone."""
    tool_turns = 4
    fake_llm.script(
        plan_reply(("analyst", "Add them up", [])),
        *[Reply(tool_calls=[("calculator", {"expression": f"{t}+1"})]) for t in range(tool_turns)],
        Reply(content="Total: 10."),
    )
    client = await Client.connect(suggesting_server.address)
    async with running_stack(
        base_settings, client, fake_llm, temporal_address=suggesting_server.address, max_turns=8
    ) as stack:
        assert stack.settings.continue_as_new_events == 0
        task = await stack.wait(await stack.submit("Add up the figures"))
        assert task["status"] == "completed", task
        await client.get_workflow_handle(task["workflow_id"]).result()
        runs = await _runs(client, task["workflow_id"])

    assert task["result"] == "Total: 10."
    calls = task["steps"][0]["tool_calls"]
    assert [(c["turn"], c["result"]) for c in calls] == [(t, str(t + 1)) for t in range(tool_turns)]
    assert len(runs) >= 2, "the server's suggestion was not followed"
    assert runs[0].events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
