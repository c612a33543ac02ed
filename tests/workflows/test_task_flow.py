"""End to end: API → Temporal workflow → activities → fake LLM over HTTP → Postgres."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import FINISH_TASK
from fake_openai import FakeOpenAI, Reply
from tests.utils import Stack, running_stack
from worker import build_worker


async def test_task_runs_plan_and_steps_end_to_end(stack: Stack) -> None:
    task_id = await stack.submit("Compare green and black tea for a short report")
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    assert task["workflow_id"] == f"task-{task_id}"
    steps = task["steps"]
    assert len(steps) >= 2
    assert [s["index"] for s in steps] == list(range(len(steps)))
    for step in steps:
        assert step["status"] == "completed"
        assert step["output"].startswith("fake answer:"), step
        assert step["started_at"] and step["finished_at"]
        assert step["agent"] in {"researcher", "analyst", "writer", "reviewer"}
    assert task["result"] == steps[-1]["output"]
    assert task["plan_fallback"] is False

    # Token usage in the ledger equals what the fake server reported, call for call.
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT purpose, step_index, prompt_tokens, completion_tokens FROM llm_calls "
                    "WHERE task_id=:t ORDER BY id"
                ),
                {"t": task_id},
            )
        ).all()
    assert [r.purpose for r in rows] == ["plan"] + ["step"] * len(steps)
    prompt, completion = stack.fake.successful_usage()
    assert sum(r.prompt_tokens for r in rows) == prompt
    assert sum(r.completion_tokens for r in rows) == completion
    assert task["cost"]["prompt_tokens"] == prompt
    assert task["cost"]["completion_tokens"] == completion

    # The workflow's history has exactly one completed run_step activity per step.
    handle = stack.client.get_workflow_handle(task["workflow_id"])
    scheduled: dict[int, str] = {}
    completed = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed.append(scheduled[event.activity_task_completed_event_attributes.scheduled_event_id])
    assert completed.count("run_step") == len(steps)
    assert completed.count("plan_task") == 1


async def test_history_has_no_patch_markers(stack: Stack) -> None:
    """The Web UI draws every MarkerRecorded event on the task's timeline: `workflow.patched()`
    adds a `core_patch` marker (and a TemporalChangeVersion search attribute) per patch. Before
    the first release the workflow has one shape, so the only marker is the local activity
    finish_task's result, which Temporal records as a marker too."""
    task_id = await stack.submit("Compare green and black tea for a short report")
    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    handle = stack.client.get_workflow_handle(task["workflow_id"])
    await handle.result()  # the workflow closes just after Postgres says completed

    markers: list[tuple[str, str]] = []
    upserted: set[str] = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            attrs = event.marker_recorded_event_attributes
            data = json.loads(attrs.details["data"].payloads[0].data) if "data" in attrs.details else {}
            markers.append((attrs.marker_name, data.get("activity_type", "")))
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            upserted |= set(event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
    assert markers == [("core_local_activity", FINISH_TASK)]
    assert upserted == {"TaskStatus", "UserId"}


async def test_bad_plan_twice_falls_back_to_one_step(stack: Stack) -> None:
    unknown_agent = '{"steps": [{"title": "t", "agent": "nobody", "instructions": "i", "depends_on": []}]}'
    stack.fake.script(Reply(content="this is not a plan"), Reply(content=unknown_agent))
    task_id = await stack.submit("Summarise the history of the bicycle")
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    assert task["plan_fallback"] is True
    assert len(task["steps"]) == 1
    assert task["steps"][0]["agent"] == "writer"
    assert task["steps"][0]["instructions"] == "Summarise the history of the bicycle"
    errors = " ".join(task["plan_errors"])
    assert "not valid JSON" in errors
    assert "unknown agent 'nobody'" in errors


async def test_invalid_plan_repaired_on_second_attempt(stack: Stack) -> None:
    stack.fake.script(Reply(content='{"steps": []}'))
    task_id = await stack.submit("Explain photosynthesis")
    task = await stack.wait(task_id)
    assert task["status"] == "completed"
    assert task["plan_fallback"] is False
    assert len(task["steps"]) >= 2
    # The repair request carried the validation errors back to the model.
    plan_requests = [r for r in stack.fake.requests if r.body and r.body.get("response_format")]
    assert len(plan_requests) == 2
    assert "invalid" in plan_requests[1].body["messages"][-1]["content"]


async def test_llm_that_keeps_failing_fails_the_task_readably(stack: Stack) -> None:
    stack.fake.script(*[Reply(status=503) for _ in range(10)])
    task_id = await stack.submit("This will not work")
    task = await stack.wait(task_id, timeout=40)
    assert task["status"] == "failed"
    assert "503" in task["error"]


async def test_non_retryable_error_is_not_retried(stack: Stack) -> None:
    stack.fake.script(Reply(status=400, content="bad request: model does not exist"))
    task_id = await stack.submit("Plan this")
    task = await stack.wait(task_id)
    assert task["status"] == "failed"
    assert "400" in task["error"]
    assert len(stack.fake.requests) == 1


async def test_without_the_sandbox_a_task_runs_alike(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    """The shipped default (ORCH_WORKFLOW_SANDBOX=false) puts the workflows on the unsandboxed
    runner, `true` on the sandbox the rest of the suite uses, and a task completes alike."""
    assert Settings().workflow_sandbox is False
    for sandbox, runner in ((True, SandboxedWorkflowRunner), (False, UnsandboxedWorkflowRunner)):
        queue = f"tq-sandbox-{sandbox}-{uuid.uuid4().hex[:8]}"  # one worker per queue and client
        settings = base_settings.model_copy(update={"workflow_sandbox": sandbox, "task_queue": queue})
        async with build_worker(settings, temporal_client) as worker:
            assert type(worker.config()["workflow_runner"]) is runner
    async with running_stack(base_settings, temporal_client, fake_llm, workflow_sandbox=False) as stack:
        task = await stack.wait(await stack.submit("Compare green and black tea for a short report"))
    assert task["status"] == "completed", task
    assert len(task["steps"]) >= 2 and all(s["status"] == "completed" for s in task["steps"])
    assert task["result"] == task["steps"][-1]["output"]
