"""remember_result: a completed task's result becomes one memory of its user, however many
times the activity runs; other outcomes are not remembered."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment

from activities.memory_activities import MemoryActivities
from durable_orchestrator.data.tables import Memory, Task, User
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import RememberInput
from memory.service import MemoryService


async def _task(engine: AsyncEngine, user: str, status: str, result: str | None) -> str:
    task_id = uuid.uuid4().hex
    async with engine.begin() as conn:
        await conn.execute(pg_insert(User).values(id=user).on_conflict_do_nothing())
        await conn.execute(sa.insert(Task).values(
            id=task_id, user_id=user, description="Report on tea exports", status=status,
            workflow_id=f"task-{task_id}", result=result,
        ))
    return task_id


async def test_a_retried_remember_result_is_one_memory(
    base_settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data", "memory_snapshot": False})
    svc = MemoryService(engine, settings)
    acts = MemoryActivities(memory=svc, settings=settings)
    env = ActivityEnvironment()
    user = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        done = await _task(engine, user, "completed", "Tea exports rose 4% in 2025.")
        first = await env.run(acts.remember_result, RememberInput(task_id=done))
        assert first > 0
        assert await env.run(acts.remember_result, RememberInput(task_id=done)) == first
        for status, result in (("failed", "partial"), ("completed", "  ")):
            other = await _task(engine, user, status, result)
            assert await env.run(acts.remember_result, RememberInput(task_id=other)) == 0
        assert await env.run(acts.remember_result, RememberInput(task_id=uuid.uuid4().hex)) == 0

        async with engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(Memory.id, Memory.task_id, Memory.meta).where(Memory.user_id == user)
            )).all()
        assert [(r.id, r.task_id) for r in rows] == [(first, done)]
        assert rows[0][2] == {"source": "task_result", "task_id": done, "description": "Report on tea exports"}
        hits = await svc.search(user, "tea exports", limit=5)
        assert [h.id for h in hits] == [first]
    finally:
        await svc.close()
