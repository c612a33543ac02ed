"""UserId/TaskStatus search attributes kept current by the workflow, queryable by visibility."""

from __future__ import annotations

import asyncio
import time

from durable_orchestrator.temporal.search_attributes import TASK_STATUS, USER_ID
from tests.utils import Stack


async def test_list_workflows_by_user_and_status(stack: Stack) -> None:
    user, key = await stack.new_user()
    resp = await stack.http.post("/tasks", json={"description": "Tea report"}, headers={"X-API-Key": key})
    assert resp.status_code == 202
    task_id = resp.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        found = [wf async for wf in stack.client.list_workflows(f'UserId="{user}" AND TaskStatus="completed"')]
        if found:
            break
        assert time.monotonic() < deadline, "workflow not visible with TaskStatus=completed"
        await asyncio.sleep(0.3)
    assert [wf.id for wf in found] == [f"task-{task_id}"]
    sa = found[0].typed_search_attributes
    assert sa.get(USER_ID) == user
    assert sa.get(TASK_STATUS) == "completed"
    # the other user's query does not see it
    others = [wf async for wf in stack.client.list_workflows(f'UserId="{stack.user}-nobody"')]
    assert others == []
