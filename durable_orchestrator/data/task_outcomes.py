"""How a task ended, as the activities that run after it (remember the result, call the
webhook) read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import Task


@dataclass(frozen=True)
class TaskOutcome:
    user_id: str
    description: str
    status: str
    result: str | None
    error: str | None
    # budget and webhook_url, as accepted at submission
    options: dict[str, Any] = field(default_factory=dict)


_OUTCOME = sa.select(
    Task.user_id, Task.description, Task.status, Task.result, Task.error, Task.options
).where(Task.id == sa.bindparam("task_id"))


async def task_outcome(engine: AsyncEngine, task_id: str) -> TaskOutcome | None:
    """None when there is no such task (deleted since)."""
    async with read(engine) as conn:
        row = (await conn.execute(_OUTCOME, {"task_id": task_id})).first()
    if row is None:
        return None
    return TaskOutcome(row.user_id, row.description, row.status, row.result, row.error, row.options or {})
