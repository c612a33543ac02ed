"""A task's events: written beside the change they report, read in order by the SSE stream.

Events get their ids from an identity column when inserted, but become visible when their
transaction commits, so a reader that only remembers "the last id I saw" can skip an event
whose transaction committed after a later-numbered one. Each event row records the id of the
transaction that wrote it (`writer_xid`), and `read_after` returns only events written by
transactions older than every transaction still running: those ids are final, and any event
that shows up later gets a larger id. (Every writer of events writes a task, step or ledger row
before its event, so it owns a transaction id before the event takes an id.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.tables import TERMINAL, XID8
from durable_orchestrator.data.tables import Event as EventRow


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type == "task.status" and self.data.get("status") in TERMINAL


# The same event written again (a retried activity) collapses onto the first one.
_ADD = insert(EventRow).on_conflict_do_nothing(index_elements=[EventRow.dedupe_key])


async def add_event(
    conn: AsyncConnection, task_id: str, type_: str, data: dict[str, Any], dedupe_key: str
) -> None:
    await conn.execute(
        _ADD, {"task_id": task_id, "type": type_, "data": data, "dedupe_key": f"{task_id}:{dedupe_key}"}
    )


_TASK = bindparam("task")
_AFTER = bindparam("after")

_READ = (
    select(EventRow.id, EventRow.type, EventRow.data)
    .where(
        EventRow.task_id == _TASK,
        EventRow.id > _AFTER,
        EventRow.writer_xid < func.pg_snapshot_xmin(func.pg_current_snapshot(), type_=XID8()),
    )
    .order_by(EventRow.id)
    .limit(bindparam("n"))
)


async def read_after(engine: AsyncEngine, task_id: str, after: int, limit: int = 500) -> list[Event]:
    async with engine.connect() as conn:
        rows = await conn.execute(_READ, {"task": task_id, "after": after, "n": limit})
        return [Event(r.id, r.type, r.data) for r in rows]


_ANY_AFTER = select(EventRow.id).where(EventRow.task_id == _TASK, EventRow.id > _AFTER).limit(1)


async def any_after(engine: AsyncEngine, task_id: str, after: int) -> bool:
    """Whether an event past `after` exists, committed or final or not."""
    async with engine.connect() as conn:
        row = await conn.execute(_ANY_AFTER, {"task": task_id, "after": after})
        return row.first() is not None
