"""What the reconciler reads: the unfinished tasks of a task queue that have been quiet for a
while, page by page; and a lock that lets one reconciler per queue work at a time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import UNFINISHED, Task


@dataclass(frozen=True)
class UnfinishedTask:
    id: str
    user_id: str
    status: str
    description: str
    webhook: bool
    updated_at: datetime
    priority: str = "normal"
    bounded: bool = False  # submitted under its user's running bound


_QUIET = (
    select(
        Task.id,
        Task.user_id,
        Task.status,
        Task.description,
        Task.options.has_key("webhook_url").label("webhook"),  # type: ignore[attr-defined]
        Task.updated_at,
        func.coalesce(Task.options["priority"].astext, "normal").label("priority"),  # type: ignore[index]
        col(Task.max_running).is_not(None).label("bounded"),
    )
    .where(
        sa.text(UNFINISHED),
        Task.task_queue == bindparam("queue"),
        Task.updated_at < func.now() - bindparam("quiet", type_=sa.Interval),
        # keyset: after the last row of the previous page
        sa.tuple_(Task.updated_at, Task.id)
        > sa.tuple_(bindparam("after_at"), bindparam("after_id")),
    )
    .order_by(Task.updated_at, Task.id)
    .limit(bindparam("n"))
)
_EPOCH = datetime(1970, 1, 1).astimezone()


async def quiet_unfinished_tasks(
    engine: AsyncEngine, task_queue: str, *, quiet_secs: float, page: int
) -> AsyncIterator[UnfinishedTask]:
    """Every task of `task_queue` not in a terminal status and unchanged for `quiet_secs`,
    oldest change first, read `page` rows per query."""
    after_at, after_id = _EPOCH, ""
    while True:
        async with read(engine) as conn:
            rows = (
                await conn.execute(
                    _QUIET,
                    {
                        "queue": task_queue,
                        "quiet": timedelta(seconds=quiet_secs),
                        "after_at": after_at,
                        "after_id": after_id,
                        "n": page,
                    },
                )
            ).all()
        for r in rows:
            yield UnfinishedTask(
                r.id, r.user_id, r.status, r.description, bool(r.webhook), r.updated_at,
                r.priority, bool(r.bounded),
            )
        if len(rows) < page:
            return
        after_at, after_id = rows[-1].updated_at, rows[-1].id


_TRY_LOCK = select(func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("name"), 0)))


@contextlib.asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """True inside the block for one holder of `name` at a time (a transaction-scoped advisory
    lock, so a reconciler that dies releases it with its connection), False for the others."""
    async with engine.begin() as conn:
        yield bool((await conn.execute(_TRY_LOCK, {"name": name})).scalar())
