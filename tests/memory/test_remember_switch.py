"""ORCH_MEMORY_REMEMBER_RESULTS: finish_task queues a completed task's result for memory, or
(switched off) queues nothing."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment

from activities.task_activities import TaskActivities
from durable_orchestrator.data import steps, tasks
from durable_orchestrator.data.tables import MemoryOutboxEntry
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import FinishInput


async def _completed_step_task(engine: AsyncEngine) -> str:
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id="switch-user", description="d", metadata={})
        await steps.save_plan(conn, task_id, [{"agent": "writer", "title": "W", "instructions": "i",
                                               "depends_on": []}], fallback=False, errors=[])
        await steps.mark_step_finished(conn, task_id, 0, output="a result worth keeping", model="m")
    return task_id


async def test_finish_task_queues_the_result_only_when_switched_on(
    base_settings: Settings, engine: AsyncEngine
) -> None:
    queued = {}
    for on in (True, False):
        settings = base_settings.model_copy(update={"memory_remember_results": on, "memory_result_chars": 8})
        acts = TaskActivities(engine=engine, llm=None, settings=settings)  # type: ignore[arg-type]
        task_id = await _completed_step_task(engine)
        await ActivityEnvironment().run(acts.finish_task, FinishInput(task_id=task_id, status="completed"))
        async with engine.connect() as conn:
            queued[on] = (await conn.execute(
                sa.select(MemoryOutboxEntry.text).where(MemoryOutboxEntry.task_id == task_id)
            )).scalars().all()
    assert queued == {True: ["a result"], False: []}
