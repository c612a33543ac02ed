"""A task's events: written beside the change they report, read in order by the SSE stream.

Each event takes the next number of its task (`tasks.last_event_seq`) in the statement that
inserts it. Taking the number updates the task row, so the row stays locked until the writer's
transaction ends: a second writer of the same task waits, then takes the next number. A task's
event numbers therefore follow commit order, and a reader that has seen number N has seen
every committed event below N: resuming "after N" (`Last-Event-ID`) never skips one. Numbers
may have gaps (an event written again by a retried activity still takes a number). Writers of
different tasks never wait for each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.tables import TERMINAL, Task
from durable_orchestrator.data.tables import Event as EventRow


@dataclass
class Event:
    id: int  # its number within the task: what the stream sends as the SSE id
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type == "task.status" and self.data.get("status") in TERMINAL


_TASK = bindparam("task")
_AFTER = bindparam("after")

_NEXT_SEQ = (
    sa.update(Task)
    .where(Task.id == _TASK)
    # An event reports a change to the task, so the row's updated_at moves with it (no second
    # statement for it beside the event).
    .values(last_event_seq=Task.last_event_seq + 1, updated_at=sa.func.now())
    .returning(Task.last_event_seq)
    .cte("next_seq")
)
# The same event written again (a retried activity) collapses onto the first one. Its own
# parameter names, so it can ride along in another module's statement (`with_event`).
_ADD = (
    insert(EventRow)
    .from_select(
        ["task_id", "type", "data", "dedupe_key", "seq"],
        select(
            _TASK,
            bindparam("event_type", type_=sa.Text),
            bindparam("event_data", type_=EventRow.__table__.c.data.type),
            bindparam("event_key", type_=sa.Text),
            _NEXT_SEQ.c.last_event_seq,
        ),
    )
    .on_conflict_do_nothing(index_elements=[EventRow.dedupe_key])
)
_ADD_AS_CTE = _ADD.cte("new_event")

Statement = TypeVar("Statement", sa.Insert, sa.Update)


def event_key(task_id: str, dedupe_key: str) -> str:
    """The stored dedupe key: unique across tasks."""
    return f"{task_id}:{dedupe_key}"


def event_params(task_id: str, type_: str, data: dict[str, Any], dedupe_key: str) -> dict[str, Any]:
    return {"task": task_id, "event_type": type_, "event_data": data,
            "event_key": event_key(task_id, dedupe_key)}


def with_event(statement: Statement) -> Statement:
    """`statement` and the event reporting it as one statement (one round trip, and in
    autocommit no BEGIN/COMMIT): execute it with `event_params(...)` beside its own parameters,
    which must not use the event's names (`task` is shared: it is the same task). Not for a
    statement that updates the task's own row: the event takes its number by updating that row,
    and of two updates of one row in one statement PostgreSQL applies only one."""
    return statement.add_cte(_ADD_AS_CTE)


@dataclass(frozen=True)
class Report:
    """An event to write beside the change it reports."""

    type: str
    data: dict[str, Any]
    dedupe_key: str


def numbered_by_task_update(task_update: sa.Update, reports: int, *returning: Any) -> tuple[sa.CTE, sa.CTE]:
    """Events written by the statement that updates the task's own row (`task_update`, a WHERE
    on `Task.id == :task`), in one round trip: the update takes their numbers itself, moving
    `last_event_seq` by one per event, since a second update of the row in the same statement
    would not apply (`with_event`). Returns the update (RETURNING `returning` too) and the
    insert of `reports` events (RETURNING their numbers) as CTEs for the statement that carries
    both; build it once, and execute it with `report_params(...)`. When the update matches no
    row, no event is written."""
    updated = (
        task_update.values(last_event_seq=Task.last_event_seq + reports)
        .returning(Task.last_event_seq, *returning)
        .cte("updated")
    )
    data_type = EventRow.__table__.c.data.type
    rows = [
        select(
            _TASK,
            bindparam(f"report_type_{i}", type_=sa.Text),
            bindparam(f"report_data_{i}", type_=data_type),
            bindparam(f"report_key_{i}", type_=sa.Text),
            updated.c.last_event_seq - (reports - 1 - i),
        )
        for i in range(reports)
    ]
    reported = (
        insert(EventRow)
        .from_select(["task_id", "type", "data", "dedupe_key", "seq"], sa.union_all(*rows))
        .on_conflict_do_nothing(index_elements=[EventRow.dedupe_key])
        .returning(EventRow.seq)
        .cte("reported")
    )
    return updated, reported


def report_params(task_id: str, reports: Sequence[Report]) -> dict[str, Any]:
    """The parameters of a statement built with `numbered_by_task_update`, `task` among them."""
    params: dict[str, Any] = {"task": task_id}
    for i, r in enumerate(reports):
        params |= {f"report_type_{i}": r.type, f"report_data_{i}": r.data,
                   f"report_key_{i}": event_key(task_id, r.dedupe_key)}
    return params


async def add_event(
    conn: AsyncConnection, task_id: str, type_: str, data: dict[str, Any], dedupe_key: str
) -> None:
    await conn.execute(_ADD, event_params(task_id, type_, data, dedupe_key))


_READ = (
    select(EventRow.seq, EventRow.type, EventRow.data)
    .where(EventRow.task_id == _TASK, EventRow.seq > _AFTER)
    .order_by(EventRow.seq)
    .limit(bindparam("n"))
)


async def read_after(
    engine: AsyncEngine, task_id: str, after: int, limit: int = 500
) -> list[Event]:
    async with engine.connect() as conn:
        rows = await conn.execute(_READ, {"task": task_id, "after": after, "n": limit})
        return [Event(r.seq, r.type, r.data) for r in rows]


_ANY_AFTER = select(EventRow.seq).where(EventRow.task_id == _TASK, EventRow.seq > _AFTER).limit(1)


async def any_after(engine: AsyncEngine, task_id: str, after: int) -> bool:
    """Whether a committed event past `after` exists."""
    async with engine.connect() as conn:
        row = await conn.execute(_ANY_AFTER, {"task": task_id, "after": after})
        return row.first() is not None
