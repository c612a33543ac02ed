"""Helpers for the agents/tools tests: scripted plans and reading workflow histories."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from fake_openai import Reply
from tests.utils import Stack


def plan_reply(*steps: tuple[str, str, list[int]]) -> Reply:
    """A plan answer: (agent, title, depends_on) per step."""
    return Reply(
        content=json.dumps(
            {
                "steps": [
                    {"title": title, "agent": agent, "instructions": f"Do: {title}", "depends_on": deps}
                    for agent, title, deps in steps
                ]
            }
        )
    )


@dataclass
class ActivityRun:
    name: str
    input: dict[str, Any]
    started: datetime | None = None
    completed: datetime | None = None


async def activity_runs(stack: Stack, workflow_id: str) -> list[ActivityRun]:
    """Completed activities of a workflow, with their decoded input and start/end times.
    Waits for the run to end first: bookkeeping after the terminal status (webhooks) would
    otherwise race the read."""
    handle = stack.client.get_workflow_handle(workflow_id)
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    scheduled: dict[int, ActivityRun] = {}
    done: list[ActivityRun] = []
    async for event in handle.fetch_history_events():
        t = event.event_time.ToDatetime()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            payloads = list(attrs.input.payloads)
            data = json.loads(payloads[0].data) if payloads else {}
            scheduled[event.event_id] = ActivityRun(attrs.activity_type.name, data)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled[event.activity_task_started_event_attributes.scheduled_event_id].started = t
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            run = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            run.completed = t
            done.append(run)
    return done


async def ledger(stack: Stack, task_id: str) -> list[Any]:
    async with stack.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT purpose, step_index, prompt_tokens, completion_tokens, cost_usd "
                    "FROM llm_calls WHERE task_id=:t ORDER BY id"
                ),
                {"t": task_id},
            )
        ).all()


def user_text(body: dict[str, Any] | None) -> str:
    msgs = (body or {}).get("messages") or []
    return "\n".join(str(m.get("content") or "") for m in msgs if m.get("role") == "user")


def tool_messages(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [m for m in (body or {}).get("messages") or [] if m.get("role") == "tool"]


async def local_activity_names(stack: Stack, workflow_id: str) -> list[str]:
    """Activity types of the local activities a workflow ran (recorded as markers). Waits for
    the workflow to end: markers are written when the workflow task that ran them completes,
    which can be after the task's row already says it ended."""
    handle = stack.client.get_workflow_handle(workflow_id)
    await handle.result()
    names: list[str] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            attrs = event.marker_recorded_event_attributes
            if attrs.marker_name != "core_local_activity":
                continue
            data = json.loads(attrs.details["data"].payloads[0].data)
            names.append(data["activity_type"])
    return names
