"""A task's events are numbered in commit order: a reader that resumes after the last number it
saw never skips an event, however the writers' transactions interleave."""

from __future__ import annotations

import asyncio
import random
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import events, tasks


async def _new_task(engine: AsyncEngine) -> str:
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(
            conn, task_id=task_id, user_id=f"u-{uuid.uuid4().hex[:6]}", description="d", metadata={}
        )
    return task_id


async def _backend_pid(conn: sa.ext.asyncio.AsyncConnection) -> int:
    pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    await conn.commit()
    return pid


async def _until_waiting_on_lock(engine: AsyncEngine, pid: int) -> None:
    for _ in range(500):
        async with engine.connect() as c:
            wait = (
                await c.execute(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"),
                    {"p": pid},
                )
            ).scalar_one_or_none()
        if wait == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited on a lock")


async def test_a_later_writer_waits_and_takes_the_next_number(engine: AsyncEngine) -> None:
    task_id = await _new_task(engine)
    first = await events.read_after(engine, task_id, 0)
    assert [(e.id, e.type) for e in first] == [(1, "task.status")]

    slow = await engine.connect()
    fast = await engine.connect()
    try:
        slow_tx = await slow.begin()
        await events.add_event(slow, task_id, "step.started", {"index": 0}, "step:0:started")
        fast_pid = await _backend_pid(fast)

        async def fast_writer() -> None:
            async with fast.begin():
                await events.add_event(
                    fast, task_id, "step.started", {"index": 1}, "step:1:started"
                )

        writer = asyncio.create_task(fast_writer())
        # The second writer of the task waits for the first one's transaction...
        await _until_waiting_on_lock(engine, fast_pid)
        assert not writer.done()
        assert await events.read_after(engine, task_id, 1) == []
        await slow_tx.commit()
        await writer
    finally:
        await slow.close()
        await fast.close()
    # ...so it commits second and is numbered second.
    after = await events.read_after(engine, task_id, 1)
    assert [(e.id, e.data["index"]) for e in after] == [(2, 0), (3, 1)]


async def test_interleaved_concurrent_writers_never_skip(engine: AsyncEngine) -> None:
    """Many writers on one task, each holding its transaction open for a random while, with a
    reader that only ever asks for "after the last number I saw", like a reconnecting client."""
    task_id = await _new_task(engine)
    rng = random.Random(13)
    writers, per_writer = 8, 12
    done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(per_writer):
            async with engine.begin() as conn:
                # Like the activities: touch another row first, then add the event.
                await conn.execute(sa.text("SELECT 1"))
                await asyncio.sleep(rng.random() / 200)
                await events.add_event(conn, task_id, "step.note", {"w": w, "i": i}, f"w{w}:{i}")
                await asyncio.sleep(rng.random() / 200)

    seen: list[events.Event] = []

    async def reader() -> None:
        last = 0
        while True:
            finished = done.is_set()  # read once more after the writers end
            batch = await events.read_after(engine, task_id, last, limit=7)
            seen.extend(batch)
            if batch:
                last = batch[-1].id
            elif finished:
                return
            await asyncio.sleep(0)

    read = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await read

    stored = await events.read_after(engine, task_id, 0, limit=10_000)
    assert len(stored) == 1 + writers * per_writer
    assert [e.id for e in seen] == [e.id for e in stored]
    assert [e.id for e in stored] == list(range(1, len(stored) + 1))
    # Each writer's own events keep its order.
    for w in range(writers):
        assert [e.data["i"] for e in stored if e.data.get("w") == w] == list(range(per_writer))


async def test_an_event_written_again_collapses(engine: AsyncEngine) -> None:
    task_id = await _new_task(engine)
    for _ in range(2):
        async with engine.begin() as conn:
            await events.add_event(conn, task_id, "step.started", {"index": 0}, "step:0:started")
    evs = await events.read_after(engine, task_id, 0)
    assert [e.type for e in evs] == ["task.status", "step.started"]
    assert evs[0].id < evs[1].id
