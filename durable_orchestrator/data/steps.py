"""A task's plan and its steps: written by the plan and run_step activities.

Every write is idempotent (activities run at least once): the plan's first writer wins, and a
step's status only moves forward from pending/running, never back over an ended step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import select

from durable_orchestrator.data import provenance, short_term
from durable_orchestrator.data.clauses import none_of, one_of
from durable_orchestrator.data.engine import read, single_statement
from durable_orchestrator.data.events import (
    Report,
    event_params,
    numbered_by_task_update,
    report_params,
    with_event,
)
from durable_orchestrator.data.tables import TERMINAL, Step, Task
from durable_orchestrator.data.tasks import TaskRow
from durable_orchestrator.data.watching import IS_WATCHED

# Parameters are not named like columns: SQLAlchemy reads an UPDATE's parameters named after
# a column of its table as values to SET.
_TASK = bindparam("task")
_STEP = bindparam("step")
# A step may still be (re)started or finished; any other status is an end.
_UNFINISHED = ("pending", "running")

_PLAN = (
    select(Step.index, Step.agent, Step.title, Step.depends_on)
    .where(Step.task_id == _TASK)
    .order_by(Step.index)
)


_INSERT_STEP = insert(Step).on_conflict_do_nothing()


def _step_rows(task_id: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "task_id": task_id,
            "index": i,
            "agent": s["agent"],
            "title": s["title"],
            "instructions": s["instructions"],
            "depends_on": s.get("depends_on") or [],
            "status": "pending",
        }
        for i, s in enumerate(steps)
    ]


def _plan_reports(steps: list[dict[str, Any]], fallback: bool) -> list[Report]:
    return [
        Report("task.status", {"status": "running"}, "status:running"),
        Report(
            "task.planned",
            {"steps": [{"index": i, "agent": s["agent"], "title": s["title"]} for i, s in enumerate(steps)],
             "fallback": fallback},
            "planned",
        ),
    ]


# The plan's steps as one JSON parameter, whatever their number: one statement to cache.
_NEW_STEPS = (
    func.jsonb_to_recordset(bindparam("plan_rows", type_=JSONB))
    .table_valued(
        sa.column("index", sa.Integer), sa.column("agent", sa.Text), sa.column("title", sa.Text),
        sa.column("instructions", sa.Text), sa.column("depends_on", ARRAY(sa.Integer)),
    )
    .render_derived("new_steps", with_types=True)
)
_INSERTED = (
    insert(Step)
    .from_select(
        ["task_id", "index", "agent", "title", "instructions", "depends_on", "status"],
        select(
            _TASK, _NEW_STEPS.c.index, _NEW_STEPS.c.agent, _NEW_STEPS.c.title,
            _NEW_STEPS.c.instructions, func.coalesce(_NEW_STEPS.c.depends_on, sa.text("'{}'")),
            sa.literal("pending", sa.Text),
        ),
    )
    .on_conflict_do_nothing()
    .returning(Step.index, Step.agent, Step.title, Step.depends_on)
    .cte("inserted")
)
_START_PLANNED = (
    sa.update(Task)
    .where(Task.id == _TASK, none_of(Task.status, TERMINAL))
    .values(
        status="running",
        plan_fallback=bindparam("fallback"),
        plan_errors=bindparam("errors"),
        plan_source=func.coalesce(Task.plan_source, bindparam("source", type_=sa.Text)),
        plan_labels=func.coalesce(bindparam("new_labels", type_=ARRAY(sa.Text)), Task.plan_labels),
        updated_at=func.now(),
    )
)
_SAVE_PLAN = (
    select(_INSERTED.c.index, _INSERTED.c.agent, _INSERTED.c.title, _INSERTED.c.depends_on)
    .add_cte(numbered_by_task_update(_START_PLANNED, 2)[1])
    .order_by(_INSERTED.c.index)
)


async def save_plan(
    conn: AsyncConnection,
    task_id: str,
    steps: list[dict[str, Any]],
    *,
    fallback: bool,
    errors: list[str],
    labels: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Write the plan, start the task (unless it has ended) and report both: one statement,
    so in autocommit one round trip. Returns the steps as stored: when an earlier attempt got
    there first, its steps win and are read back. `labels`: the plan's provenance."""
    if not steps:
        raise ValueError("a plan has at least one step")
    saved = [dict(r) for r in (await conn.execute(_SAVE_PLAN, {
        **report_params(task_id, _plan_reports(steps, fallback)),
        # The recordset ignores the keys it does not name.
        "plan_rows": _step_rows(task_id, steps), "fallback": fallback, "errors": errors or None,
        "source": "fallback" if fallback else "planner", "new_labels": labels or None,
    })).mappings()]
    if len(saved) == len(steps):
        return saved
    # Not all of ours went in: the statement's snapshot may predate the rows that won.
    return [dict(r) for r in (await conn.execute(_PLAN, {"task": task_id})).mappings()]


async def insert_given_plan(conn: AsyncConnection, task_id: str, steps: list[dict[str, Any]]) -> None:
    """A plan that came with the submission, written with the task (in its transaction);
    the plan activity then starts it without asking the planner."""
    await conn.execute(_INSERT_STEP, _step_rows(task_id, steps))


# The task's existing steps beside its row: the plan activity learns in one round trip
# whether it has a plan to start or one to make.
_STORED_PLAN = (
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_object(
                    "index", Step.index, "agent", Step.agent, "title", Step.title,
                    "depends_on", Step.depends_on,
                ),
                Step.index,
            ),
            type_=JSON,
        )
    )
    .where(Step.task_id == Task.id)
    .scalar_subquery()
)
_TASK_AND_PLAN = select(
    Task.id, Task.user_id, Task.description, Task.status, Task.options, _STORED_PLAN.label("plan")
).where(Task.id == _TASK)


async def task_and_plan(engine: AsyncEngine, task_id: str) -> tuple[TaskRow, list[dict[str, Any]]]:
    """The task and the steps already written for it (given with the submission, or by an
    earlier attempt of the planner), in index order."""
    async with read(engine) as conn:
        row = (await conn.execute(_TASK_AND_PLAN, {"task": task_id})).first()
    if row is None:
        raise LookupError(f"task {task_id} does not exist")
    return TaskRow(row.id, row.user_id, row.description, row.status, row.options), row.plan or []


_START_GIVEN = sa.update(Task).where(Task.id == _TASK, Task.status == "pending").values(
    status="running", updated_at=func.now()
)
_, _GIVEN_REPORTED = numbered_by_task_update(_START_GIVEN, 2)
_START_GIVEN_PLAN = select(_GIVEN_REPORTED.c.seq)


async def start_given_plan(engine: AsyncEngine, task_id: str, plan: list[dict[str, Any]]) -> None:
    """Start a task whose steps are already written: the same status and events as a planned
    one, at most once (only a pending task starts), in one statement."""
    async with single_statement(engine) as conn:
        await conn.execute(_START_GIVEN_PLAN, report_params(task_id, _plan_reports(plan, False)))


@dataclass
class StepContext:
    description: str
    agent: str
    title: str
    instructions: str
    status: str
    output: str | None
    model: str | None
    dependencies: list[tuple[int, str, str]]  # (index, title, output)
    options: dict[str, Any] | None = None  # the task's options (budget), read in the same query
    watched: bool = False  # an event-stream client wants this task's live text (data/watching.py)


_DEP = aliased(Step, name="dep")
# The steps it depends on, in the same round trip: [[index, title, output], ...] by index.
_DEPENDENCIES = (
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_array(_DEP.index, _DEP.title, func.coalesce(_DEP.output, "")),
                _DEP.index,
            ),
            type_=JSON,
        )
    )
    .where(_DEP.task_id == Step.task_id, _DEP.index == sa.any_(Step.depends_on))
    .scalar_subquery()
)
_CONTEXT = (
    select(
        Task.description, Task.options, Step.agent, Step.title, Step.instructions, Step.status,
        Step.output, Step.model, IS_WATCHED, _DEPENDENCIES.label("dependencies"),
    )
    .join_from(Step, Task, Task.id == Step.task_id)
    .where(Step.task_id == _TASK, Step.index == _STEP)
)


async def step_context(engine: AsyncEngine, task_id: str, index: int) -> StepContext:
    """Everything a step's prompt needs, plus its own state (to skip work already done)."""
    async with read(engine) as conn:
        row = (await conn.execute(_CONTEXT, {"task": task_id, "step": index})).first()
    if row is None:
        raise LookupError(f"step {index} of task {task_id} does not exist")
    deps = [(i, title, output) for i, title, output in row.dependencies or ()]
    return StepContext(
        description=row.description,
        agent=row.agent,
        title=row.title,
        instructions=row.instructions,
        status=row.status,
        output=row.output,
        model=row.model,
        dependencies=deps,
        options=row.options,
        watched=row.watched,
    )


# Each status change is one statement with the event that reports it: no BEGIN/COMMIT around
# them when the caller runs it in autocommit.
_START_STEP = with_event(
    sa.update(Step)
    .where(Step.task_id == _TASK, Step.index == _STEP, one_of(Step.status, _UNFINISHED))
    .values(status="running", started_at=func.coalesce(Step.started_at, func.now()))
)


# The start of a step's first turn, and what its prompt takes from the task, in one statement.
# The reads see the task as it was just before the start, which changes neither.
_START_AND_READ = sa.select(
    short_term.NEWEST_AS_JSON.label("entries"),
    provenance.labels_of(_TASK, other_than_step=_STEP).label("labels"),
).add_cte(_START_STEP.returning(Step.index).cte("started"))


@dataclass
class StepStart:
    entries: list[tuple[int | None, str, str]]  # the task's short-term memory, newest first
    labels: list[str]  # the provenance of everything the prompt can contain


async def start_step(
    conn: AsyncConnection, task_id: str, index: int, agent: str, *, exclude_outputs_of: list[int]
) -> StepStart:
    """Mark the step started (with its event) and read, for its first prompt, the task's live
    short-term memory entries (not the step's own, nor its dependencies' outputs, which the
    prompt has already) and the labels of those entries and of the plan: one round trip."""
    row = (await conn.execute(_START_AND_READ, {
        "step": index,
        **event_params(task_id, "step.started", {"index": index, "agent": agent}, f"step:{index}:started"),
        **short_term.newest_params(task_id, exclude_step=index, exclude_outputs_of=exclude_outputs_of),
    })).one()
    return StepStart([tuple(e) for e in row.entries or ()], row.labels or [])


# Not over a cancelled/skipped/failed step: a call that outlived its task's cancellation must
# not flip the step back to completed.
_FINISH = (
    sa.update(Step)
    .where(Step.task_id == _TASK, Step.index == _STEP, one_of(Step.status, _UNFINISHED))
    .values(
        status="completed",
        output=bindparam("new_output"),
        model=bindparam("new_model"),
        error=sa.null(),
        started_at=func.coalesce(Step.started_at, func.now()),
        finished_at=func.now(),
    )
)
_FINISH_STEP = with_event(_FINISH)
# The same with the output written to the task's short-term memory.
_FINISH_STEP_KEEPING_OUTPUT = with_event(short_term.ADD.add_cte(_FINISH.cte("finished_step")))


async def mark_step_finished(
    conn: AsyncConnection,
    task_id: str,
    index: int,
    *,
    output: str,
    model: str,
    keep: short_term.NewEntry | None = None,
) -> None:
    """The step completed with `output`; `keep`: its short-term memory entry, written in the
    same statement."""
    params = {
        "task": task_id, "step": index, "new_output": output, "new_model": model,
        **event_params(
            task_id, "step.finished",
            {"index": index, "status": "completed", "model": model, "preview": output[:200]},
            f"step:{index}:finished",
        ),
    }
    if keep is None:
        await conn.execute(_FINISH_STEP, params)
    else:
        await conn.execute(_FINISH_STEP_KEEPING_OUTPUT, {**params, **keep.params(task_id, index)})
