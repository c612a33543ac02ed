"""Reading a task's events in order, from Postgres, for the SSE stream.

Events get their ids from an identity column when inserted, but become visible when their
transaction commits, so a reader that only remembers "the last id I saw" can skip an event
whose transaction committed after a later-numbered one. Each event row records the id of the
transaction that wrote it (`writer_xid`, migration 0005), and `read_after` returns only events
written by transactions older than every transaction still running: those ids are final, and
any event that shows up later gets a larger id. (Every writer in data/tasks.py writes a task,
step or ledger row before its event, so it owns a transaction id before the event takes an id.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.tasks import TERMINAL


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type == "task.status" and self.data.get("status") in TERMINAL


_READ = sa.text(
    "SELECT id, type, data FROM events WHERE task_id = :t AND id > :after "
    "AND writer_xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY id LIMIT :n"
)


async def read_after(engine: AsyncEngine, task_id: str, after: int, limit: int = 500) -> list[Event]:
    async with engine.connect() as conn:
        rows = await conn.execute(_READ, {"t": task_id, "after": after, "n": limit})
        return [
            Event(r.id, r.type, r.data if isinstance(r.data, dict) else json.loads(r.data))
            for r in rows
        ]


async def task_status(engine: AsyncEngine, task_id: str, user_id: str) -> str | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text("SELECT status FROM tasks WHERE id=:t AND user_id=:u"),
                {"t": task_id, "u": user_id},
            )
        ).scalar_one_or_none()


async def any_after(engine: AsyncEngine, task_id: str, after: int) -> bool:
    """Whether an event past `after` exists, committed or final or not."""
    async with engine.connect() as conn:
        row = await conn.execute(
            sa.text("SELECT 1 FROM events WHERE task_id=:t AND id > :a LIMIT 1"),
            {"t": task_id, "a": after},
        )
        return row.first() is not None
