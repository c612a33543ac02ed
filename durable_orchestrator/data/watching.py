"""Who is watching a task live: an event-stream client that wants `step.delta` events holds a
short lease on its task (`tasks.watched_until`), renewed while it stays connected. A step
streams its answer from the provider only while its task is watched; parsing a stream chunk by
chunk and publishing its text costs the worker CPU that nobody benefits from otherwise."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import Task

#: How long one renewal holds; clients renew at a third of it, so a lease outlives a missed
#: renewal, and a step that starts within this long after the client left still streams.
LEASE_SECS = 30.0

_WATCH = (
    sa.update(Task)
    .where(Task.id == bindparam("task"))
    .values(watched_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("secs", type_=sa.Float)))
)

#: A column for reads that decide whether to stream (steps.step_context).
IS_WATCHED = sa.func.coalesce(Task.watched_until > func.now(), False).label("watched")


async def watch(engine: AsyncEngine, task_id: str, secs: float = LEASE_SECS) -> None:
    """Take or renew the lease (autocommit: one round trip)."""
    async with read(engine) as conn:
        await conn.execute(_WATCH, {"task": task_id, "secs": secs})
