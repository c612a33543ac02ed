"""Reruns: a new task from a finished one, reusing the recorded outputs of the steps that need
no new work. What to reuse is decided by the caller (api/routes/reruns.py); this module reads
the parent and writes the rerun in one transaction, and reports what reuse saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.events import add_event
from durable_orchestrator.data.tables import LLMCall, ShortTermEntry, Step, Task
from durable_orchestrator.data.tasks import insert_task

_TASK = bindparam("task")


@dataclass
class ParentStep:
    index: int
    agent: str
    title: str
    instructions: str
    depends_on: list[int]
    status: str
    output: str | None
    model: str | None
    started_at: datetime | None
    finished_at: datetime | None
    reused_from_task_id: str | None


@dataclass
class ParentTask:
    id: str
    status: str
    description: str
    metadata: dict[str, Any]
    options: dict[str, Any]
    steps: list[ParentStep] = field(default_factory=list)


_PARENT = select(
    Task.id, Task.status, Task.description, Task.meta.label("meta"), Task.options
).where(Task.id == _TASK, Task.user_id == bindparam("user"))
_PARENT_STEPS = (
    select(
        Step.index,
        Step.agent,
        Step.title,
        Step.instructions,
        Step.depends_on,
        Step.status,
        Step.output,
        Step.model,
        Step.started_at,
        Step.finished_at,
        Step.reused_from_task_id,
    )
    .where(Step.task_id == _TASK)
    .order_by(Step.index)
)


async def load_parent(engine: AsyncEngine, task_id: str, user_id: str) -> ParentTask | None:
    """The task with its plan and outputs; None unless it exists and belongs to `user_id`."""
    async with engine.connect() as conn:  # one snapshot for the task and its steps
        row = (await conn.execute(_PARENT, {"task": task_id, "user": user_id})).first()
        if row is None:
            return None
        steps = [ParentStep(*r) for r in await conn.execute(_PARENT_STEPS, {"task": task_id})]
    return ParentTask(row.id, row.status, row.description, row.meta, row.options or {}, steps)


@dataclass
class RerunStep:
    """A step of the rerun: `reuse` = the parent's step whose output it keeps, else it runs."""

    agent: str
    title: str
    instructions: str
    depends_on: list[int]
    reuse: ParentStep | None = None


_INSERT_STEPS = sa.insert(Step)
# The reused steps' short-term memory (their outputs, tool results, notes) as the steps after
# them saw it in the parent, under the rerun's own dedupe keys.
_COPY_MEMORY = sa.insert(ShortTermEntry).from_select(
    ["task_id", "step_index", "kind", "content", "dedupe_key", "expires_at"],
    select(
        bindparam("new_task", type_=sa.Text),
        ShortTermEntry.step_index,
        ShortTermEntry.kind,
        ShortTermEntry.content,
        func.concat(
            bindparam("new_task", type_=sa.Text),
            func.substr(ShortTermEntry.dedupe_key, bindparam("prefix_len", type_=sa.Integer)),
        ),
        ShortTermEntry.expires_at,
    )
    .where(
        ShortTermEntry.task_id == _TASK,
        ShortTermEntry.expires_at > func.now(),
        ShortTermEntry.step_index == sa.any_(bindparam("steps", type_=ARRAY(sa.Integer))),
    )
    .order_by(ShortTermEntry.id),
)


async def insert_rerun(
    conn: AsyncConnection,
    *,
    task_id: str,
    user_id: str,
    parent: ParentTask,
    options: dict[str, Any],
    steps: list[RerunStep] | None,
    from_step: int | None,
    task_queue: str | None = None,
) -> None:
    """The rerun task with its plan (None: the planner plans again), in the caller's
    transaction. A reused step is written completed, with the parent's output and model and a
    link to the task that produced it."""
    await insert_task(
        conn,
        task_id=task_id,
        user_id=user_id,
        description=parent.description,
        metadata=parent.metadata,
        options=options,
        plan_source="rerun" if steps else None,
        parent_task_id=parent.id,
        rerun_of_step=from_step,
        task_queue=task_queue,
    )
    if not steps:
        return
    await conn.execute(
        _INSERT_STEPS,
        [
            {
                "task_id": task_id,
                "index": i,
                "agent": s.agent,
                "title": s.title,
                "instructions": s.instructions,
                "depends_on": s.depends_on,
                "status": "completed" if s.reuse else "pending",
                "output": s.reuse.output if s.reuse else None,
                "model": s.reuse.model if s.reuse else None,
                "started_at": s.reuse.started_at if s.reuse else None,
                "finished_at": s.reuse.finished_at if s.reuse else None,
                "reused_from_task_id": (s.reuse.reused_from_task_id or parent.id)
                if s.reuse
                else None,
            }
            for i, s in enumerate(steps)
        ],
    )
    reused = [i for i, s in enumerate(steps) if s.reuse]
    if reused:
        await conn.execute(
            _COPY_MEMORY,
            {
                "new_task": task_id,
                "task": parent.id,
                "prefix_len": len(parent.id) + 1,
                "steps": reused,
            },
        )
    await add_event(
        conn,
        task_id,
        "task.rerun",
        {"parent_task_id": parent.id, "from_step": from_step, "reused_steps": reused},
        "rerun",
    )


@dataclass
class Saved:
    """What reused outputs would have cost again: the producing steps' ledger rows."""

    reused_steps: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


async def saved_by_reuse(
    engine: AsyncEngine, user_id: str, *, start: datetime | None = None, end: datetime | None = None
) -> Saved:
    """Over the user's reruns created in [start, end)."""
    rerun = aliased(Task)
    reused = (
        select(Step.task_id, Step.index, Step.reused_from_task_id)
        .join_from(Step, rerun, rerun.id == Step.task_id)
        .where(rerun.user_id == user_id, Step.reused_from_task_id.is_not(None))
    )
    if start is not None:
        reused = reused.where(rerun.created_at >= start)
    if end is not None:
        reused = reused.where(rerun.created_at < end)
    reused_steps = reused.subquery()
    query = (
        select(
            func.count(
                func.distinct(func.concat(reused_steps.c.task_id, ":", reused_steps.c.index))
            ),
            func.count(LLMCall.id),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0),
        )
        .select_from(reused_steps)
        .outerjoin(
            LLMCall,
            sa.and_(
                LLMCall.task_id == reused_steps.c.reused_from_task_id,
                LLMCall.step_index == reused_steps.c.index,
                LLMCall.purpose == "step",
            ),
        )
    )
    async with read(engine) as conn:
        row = (await conn.execute(query)).one()
    return Saved(*row)
