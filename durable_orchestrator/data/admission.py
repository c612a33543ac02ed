"""Per-user concurrency: how many of a user's tasks may run at once, decided in PostgreSQL.

A task submitted under a bound (`tasks.max_running`) asks for a slot before it plans. A slot is
a bounded task with `admitted_at` set that has not ended. The decisions of one user are
serialised by a transaction-scoped advisory lock on the user, so two tasks can never take the
last slot together. FIFO per user: a task is not admitted while an older one of the same user
waits, and each ending task admits the oldest waiting ones its slot allows. Tasks submitted
without a bound take no slot and wait for none."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from durable_orchestrator.data.clauses import none_of
from durable_orchestrator.data.events import add_event
from durable_orchestrator.data.tables import TERMINAL, Task

_TASK = bindparam("task")
_USER = bindparam("user")

_LOCK_USER = select(func.pg_advisory_xact_lock(func.hashtextextended(_USER, 0)))
_THE_TASK = select(Task.user_id, Task.max_running, Task.admitted_at, Task.status, Task.created_at).where(
    Task.id == _TASK
)
_SLOTS_TAKEN = select(func.count()).where(
    Task.user_id == _USER,
    col(Task.admitted_at).is_not(None),
    col(Task.max_running).is_not(None),
    none_of(Task.status, TERMINAL),
)
_WAITING = (
    select(Task.id, Task.max_running, Task.admitted_at)
    .where(Task.user_id == _USER, Task.status == "queued")
    .order_by(col(Task.created_at), col(Task.id))
)
_OLDER_WAITING = (
    _WAITING.where(col(Task.admitted_at).is_(None))
    .where(sa.tuple_(col(Task.created_at), col(Task.id)) < sa.tuple_(bindparam("created"), _TASK))
    .limit(1)
)
# The wall clock, not now(): a transaction that waited for the lock admits at the time it got it.
_ADMIT = sa.update(Task).where(Task.id == _TASK).values(admitted_at=func.clock_timestamp())
_QUEUE = (
    sa.update(Task).where(Task.id == _TASK, Task.status == "pending")
    .values(status="queued", updated_at=func.now()).returning(Task.id)
)


async def take_slot(engine: AsyncEngine, task_id: str) -> bool:
    """Admit the task now (True), or mark it `queued` to be admitted when a slot frees (False).
    Asking again gives the same answer once admitted, so a retried activity is harmless."""
    async with engine.begin() as conn:
        task = (await conn.execute(_THE_TASK, {"task": task_id})).one()
        if task.admitted_at is not None or task.max_running is None or task.status in TERMINAL:
            return True
        await conn.execute(_LOCK_USER, {"user": task.user_id})
        taken = (await conn.execute(_SLOTS_TAKEN, {"user": task.user_id})).scalar_one()
        older = (
            await conn.execute(_OLDER_WAITING, {"user": task.user_id, "task": task_id, "created": task.created_at})
        ).first()
        if taken < task.max_running and older is None:
            await conn.execute(_ADMIT, {"task": task_id})
            return True
        if (await conn.execute(_QUEUE, {"task": task_id})).first() is not None:
            await add_event(conn, task_id, "task.status", {"status": "queued"}, "status:queued")
        return False


async def free_slot(engine: AsyncEngine, user_id: str) -> list[str]:
    """After one of the user's bounded tasks ended (its terminal status committed: under the
    lock, every later decision sees the slot free): admit the oldest waiting tasks the free
    slots allow. Returns every task that is admitted but still `queued`, i.e. whose workflow
    must be told; telling it twice is harmless, so a retried caller may ask again."""
    async with engine.begin() as conn:
        await conn.execute(_LOCK_USER, {"user": user_id})
        taken = (await conn.execute(_SLOTS_TAKEN, {"user": user_id})).scalar_one()
        wake: list[str] = []
        for waiting in (await conn.execute(_WAITING, {"user": user_id})).all():
            if waiting.admitted_at is None:
                if waiting.max_running is not None and taken >= waiting.max_running:
                    break  # FIFO: nobody behind it may pass
                await conn.execute(_ADMIT, {"task": waiting.id})
                taken += 1
            wake.append(waiting.id)
        return wake
