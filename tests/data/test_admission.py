"""Running slots of one user, decided in PostgreSQL: never more than the bound, even when many
tasks ask at once; waiting tasks are admitted oldest first; unbounded tasks take no slot."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import admission, keys, tasks


async def _tasks(engine: AsyncEngine, user: str, n: int, bound: int | None) -> list[str]:
    ids = []
    async with engine.begin() as conn:
        await keys.add_user(conn, user)
    for i in range(n):  # one transaction each: created_at orders them
        task_id = tasks.new_task_id()
        async with engine.begin() as conn:
            await tasks.insert_task(conn, task_id=task_id, user_id=user, description=f"t{i}", metadata={},
                                    max_running=bound)
        ids.append(task_id)
    return ids


async def test_many_asking_at_once_never_exceed_the_bound(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    ids = await _tasks(engine, user, 20, bound=3)
    admitted = await asyncio.gather(*(admission.take_slot(engine, i) for i in ids))
    assert sum(admitted) == 3
    statuses = {i: await tasks.task_status(engine, i, user) for i in ids}
    assert sorted(statuses.values()) == ["pending"] * 3 + ["queued"] * 17
    assert await admission.take_slot(engine, ids[admitted.index(True)]) is True  # asking again: same answer


async def test_waiting_tasks_are_admitted_oldest_first(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    t0, t1, t2, t3 = await _tasks(engine, user, 4, bound=1)
    assert await admission.take_slot(engine, t0)
    # They ask in another order than they were submitted in.
    for t in (t2, t3, t1):
        assert await admission.take_slot(engine, t) is False
    assert await admission.free_slot(engine, user) == []  # t0 still runs: nothing frees
    await tasks.finish_task(engine, t0, "completed")
    assert await admission.free_slot(engine, user) == [t1]
    assert await admission.free_slot(engine, user) == [t1]  # not started yet: told again, not twice admitted
    await tasks.finish_task(engine, t1, "cancelled")
    assert await admission.free_slot(engine, user) == [t2]
    # A newcomer does not pass the one still waiting, even with a slot about to free.
    (late,) = await _tasks(engine, user, 1, bound=1)
    await tasks.finish_task(engine, t2, "completed")
    assert await admission.take_slot(engine, late) is False
    assert await admission.free_slot(engine, user) == [t3]
    await tasks.finish_task(engine, t3, "completed")
    assert await admission.free_slot(engine, user) == [late]


async def test_unbounded_tasks_take_no_slot(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    free = await _tasks(engine, user, 5, bound=None)
    assert all([await admission.take_slot(engine, i) for i in free])
    bounded = await _tasks(engine, user, 2, bound=1)
    assert [await admission.take_slot(engine, i) for i in bounded] == [True, False]
