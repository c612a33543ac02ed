"""What every Temporal Web UI user can read about a task — its summary, current details, memo
and search attributes — holds no user text unless the operator opts in."""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import workflow_id_for
from fake_openai import FakeOpenAI, Reply
from tests.utils import running_stack

PLAN = (
    '{"steps": [{"title": "Dig into the private-title-%s", "agent": "researcher", '
    '"instructions": "look", "depends_on": []}]}'
)


async def _visible_text(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, **overrides: object
) -> tuple[str, str, str]:
    """(secret word, summary, current details) of a task held in its first step."""
    word = uuid.uuid4().hex[:10]
    async with running_stack(base_settings, temporal_client, fake_llm, **overrides) as s:
        fake_llm.script(Reply(content=PLAN % word), Reply(delay=60))  # plan, then a held step
        task_id = await s.submit(f"Confidential question {word} about my health")
        handle = s.client.get_workflow_handle(workflow_id_for(task_id))
        deadline = time.monotonic() + 30
        while len(fake_llm.requests) < 2:  # the step's call is at the (held) provider
            assert time.monotonic() < deadline, "the step never reached the LLM"
            await asyncio.sleep(0.05)
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        desc = await handle.describe()
        summary = await desc.static_summary() or ""
        visible = " ".join(
            [
                summary,
                meta.current_details,
                str(await desc.memo()),
                str(desc.typed_search_attributes),
            ]
        )
        await s.http.post(f"/tasks/{task_id}/cancel", headers=s.headers)
        await s.wait(task_id)
    return word, visible, meta.current_details


async def test_no_user_text_where_every_web_ui_user_looks(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    word, visible, details = await _visible_text(base_settings, temporal_client, fake_llm)
    assert word not in visible and "Confidential" not in visible, visible
    assert details.startswith("step 0 · researcher")  # still says where the task is


async def test_operator_may_opt_in_to_user_text(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    word, visible, details = await _visible_text(
        base_settings, temporal_client, fake_llm, temporal_user_text=True
    )
    assert f"Confidential question {word}" in visible
    assert f"private-title-{word}" in details
