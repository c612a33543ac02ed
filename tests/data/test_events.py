"""The event feed never skips an event whose transaction commits after a later-numbered one."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import events, tasks


async def test_out_of_order_commits_are_not_skipped(engine: AsyncEngine) -> None:
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id=f"u-{uuid.uuid4().hex[:6]}",
                                description="d", metadata={})
    first = await events.read_after(engine, task_id, 0)
    assert [e.type for e in first] == ["task.status"]
    last = first[-1].id

    slow = await engine.connect()
    try:
        tx = await slow.begin()
        # Like every writer of events: touch a row first, then add the event.
        await slow.execute(sa.text("UPDATE tasks SET updated_at=now() WHERE id=:t"), {"t": task_id})
        await events.add_event(slow, task_id, "step.started", {"index": 0}, "step:0:started")
        async with engine.begin() as fast:
            await events.add_event(fast, task_id, "step.started", {"index": 1}, "step:1:started")
        # The later id is committed, the earlier one is not: a naive "id > last" reader would
        # hand out the later one now and never see the earlier one.
        async with engine.connect() as c:
            visible = (await c.execute(
                sa.text("SELECT data->>'index' FROM events WHERE task_id=:t AND id > :l"), {"t": task_id, "l": last}
            )).scalars().all()
        assert visible == ["1"]
        assert await events.read_after(engine, task_id, last) == []
        await tx.commit()
    finally:
        await slow.close()
    after = await events.read_after(engine, task_id, last)
    assert [e.data["index"] for e in after] == [0, 1]
    assert [e.id for e in after] == sorted(e.id for e in after)
