"""task_outcome: what the post-task activities (remember the result, call the webhook) read."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.tables import Task, User
from durable_orchestrator.data.tasks import TaskOutcome, task_outcome


async def test_task_outcome_reads_the_finished_task(engine: AsyncEngine) -> None:
    task_id, user = uuid.uuid4().hex, f"to-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(pg_insert(User).values(id=user).on_conflict_do_nothing())
        await conn.execute(sa.insert(Task).values(
            id=task_id, user_id=user, description="summarise", status="failed", workflow_id=f"task-{task_id}",
            result=None, error="budget exceeded", options={"webhook_url": "http://127.0.0.1/hook"},
        ))
    assert await task_outcome(engine, task_id) == TaskOutcome(
        user_id=user, description="summarise", status="failed", result=None, error="budget exceeded",
        options={"webhook_url": "http://127.0.0.1/hook"},
    )
    assert await task_outcome(engine, uuid.uuid4().hex) is None
