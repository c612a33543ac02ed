"""The task row: submitted by the API, ended by the workflow's finish activity.

Every write that an activity makes is idempotent: activities run at least once, so a retried
or re-delivered activity must land on the rows its first run wrote, never beside them.
A task's steps are in steps.py, its view for the API in task_view.py, the list in task_list.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import select

from durable_orchestrator.data import memory_outbox
from durable_orchestrator.data.clauses import none_of, one_of
from durable_orchestrator.data.engine import read, single_statement
from durable_orchestrator.data.events import (
    Report,
    event_key,
    numbered_by_task_update,
    report_params,
)
from durable_orchestrator.data.provenance import labels_of
from durable_orchestrator.data.tables import TERMINAL, Step, Task, ToolCall, User
from durable_orchestrator.data.tables import Event as EventRow
from durable_orchestrator.temporal.contracts import workflow_id_for

# Parameters are not named like columns: SQLAlchemy reads an UPDATE's parameters named after
# a column of its table as values to SET.
_TASK = bindparam("task")
_USER = bindparam("user")


def new_task_id() -> str:
    return uuid.uuid4().hex


# --- API side ---------------------------------------------------------------------------------

# The task's first event, numbered 1 (the row starts at last_event_seq 1). The events' foreign
# key is checked at the end of the statement, when the task row exists.
_FIRST_EVENT = (
    insert(EventRow)
    .values({
        EventRow.task_id: _TASK,
        EventRow.type: "task.status",
        EventRow.data: sa.cast(sa.literal('{"status": "pending"}'), JSONB),
        EventRow.dedupe_key: bindparam("first_event_key", type_=sa.Text),
        EventRow.seq: 1,
    })
    .cte("first_event")
)

# One statement, so a submission is one round trip without BEGIN/COMMIT: the user row (first
# task of a new user), the task and its first event.
_INSERT_TASK = (
    sa.insert(Task)
    .values(
        {
            Task.id: _TASK,
            Task.user_id: _USER,
            Task.description: bindparam("description"),
            Task.meta: bindparam("metadata"),
            Task.status: "pending",
            Task.workflow_id: bindparam("workflow_id"),
            Task.idempotency_key: bindparam("idempotency_key"),
            Task.request_hash: bindparam("request_hash"),
            Task.max_running: bindparam("max_running"),
            # Given although it has a default: for an INSERT that carries a CTE, SQLAlchemy
            # sends NULL instead of computing Python-side column defaults.
            Task.options: bindparam("options"),
            Task.task_queue: bindparam("task_queue"),
            Task.last_event_seq: 1,
            Task.plan_source: bindparam("plan_source", type_=sa.Text),
            Task.parent_task_id: bindparam("parent_task_id", type_=sa.Text),
            Task.rerun_of_step: bindparam("rerun_of_step", type_=sa.Integer),
        }
    )
    .add_cte(insert(User).values(id=_USER).on_conflict_do_nothing().cte("new_user"))
    .add_cte(_FIRST_EVENT)
)


async def insert_task(
    conn: AsyncConnection,
    *,
    task_id: str,
    user_id: str,
    description: str,
    metadata: dict[str, Any],
    options: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    task_queue: str | None = None,
    plan_source: str | None = None,
    parent_task_id: str | None = None,
    rerun_of_step: int | None = None,
    max_running: int | None = None,
) -> None:
    """One statement (the caller may run it in autocommit when nothing else is written).
    `plan_source` when the steps come with the task (inserted by the caller, in `conn`);
    `parent_task_id` and `rerun_of_step` for a rerun (data/reruns.py)."""
    await conn.execute(
        _INSERT_TASK,
        {
            "task": task_id,
            "user": user_id,
            "description": description,
            "metadata": metadata,
            "workflow_id": workflow_id_for(task_id),
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "options": options or {},
            "task_queue": task_queue,
            "plan_source": plan_source,
            "parent_task_id": parent_task_id,
            "rerun_of_step": rerun_of_step,
            "max_running": max_running,
            "first_event_key": event_key(task_id, "status:pending"),
        },
    )


_DELETE = sa.delete(Task).where(Task.id == _TASK)


async def delete_task(engine: AsyncEngine, task_id: str) -> None:
    """Delete a task and what hangs off it (steps, events... cascade)."""
    async with engine.begin() as conn:
        await conn.execute(_DELETE, {"task": task_id})


@dataclass
class Submission:
    """What a repeated Idempotency-Key needs of the task it was first used for."""

    id: str
    status: str
    request_hash: str | None
    description: str
    options: dict[str, Any]
    max_running: int | None


_SUBMISSION = select(
    Task.id, Task.status, Task.request_hash, Task.description, Task.options, Task.max_running
).where(
    Task.user_id == _USER, Task.idempotency_key == bindparam("idempotency_key")
)


async def find_submission(engine: AsyncEngine, user_id: str, idempotency_key: str) -> Submission | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(_SUBMISSION, {"user": user_id, "idempotency_key": idempotency_key})
        ).first()
    return Submission(*row) if row else None


_STATUS = select(Task.status).where(Task.id == _TASK, Task.user_id == _USER)


async def task_status(engine: AsyncEngine, task_id: str, user_id: str) -> str | None:
    """The task's status; None unless it exists and belongs to `user_id`."""
    async with engine.connect() as conn:
        return (await conn.execute(_STATUS, {"task": task_id, "user": user_id})).scalar_one_or_none()


# --- activity side ----------------------------------------------------------------------------


@dataclass
class TaskRow:
    id: str
    user_id: str
    description: str
    status: str
    options: dict[str, Any]


_LOAD = select(Task.id, Task.user_id, Task.description, Task.status, Task.options).where(Task.id == _TASK)


async def load_task(engine: AsyncEngine, task_id: str) -> TaskRow:
    async with read(engine) as conn:
        row = (await conn.execute(_LOAD, {"task": task_id})).first()
    if row is None:
        raise LookupError(f"task {task_id} does not exist")
    return TaskRow(*row)


_dependent = aliased(Step)


# The result: the outputs of the plan's sink steps (those no other step depends on), in order,
# separated by a blank line.
_SINK_OUTPUTS = (
    select(func.string_agg(
        func.coalesce(Step.output, ""), aggregate_order_by(sa.literal("\n\n", sa.Text), Step.index)
    ))
    .where(
        Step.task_id == _TASK,
        ~sa.exists().where(_dependent.task_id == Step.task_id, Step.index == sa.any_(_dependent.depends_on)),
    )
    .scalar_subquery()
)


_FAIL_STEP = (
    sa.update(Step)
    .where(Step.task_id == _TASK, Step.index == bindparam("failed_step"), Step.status != "completed")
    .values(status="failed", error=bindparam("new_error"), finished_at=func.now())
)
_CLOSE_STEPS = (
    sa.update(Step)
    .where(Step.task_id == _TASK, one_of(Step.status, ("pending", "running", "waiting_approval")))
    .values(status=bindparam("new_status"), finished_at=func.coalesce(Step.finished_at, func.now()))
)
# Tool calls that will never run now (pending approvals included) say so.
_DROP_CALLS = (
    sa.update(ToolCall)
    .where(ToolCall.task_id == _TASK, one_of(ToolCall.status, ("validated", "awaiting_approval")))
    .values(
        status="rejected",
        finished_at=func.now(),
        error=func.coalesce(ToolCall.error, bindparam("reason", type_=sa.Text)),
    )
)


@dataclass
class Finished:
    result: str | None  # the task's result (a completed task's sink outputs)
    # Seconds since submission, when this call ended the task; None when it had already ended.
    age_secs: float | None


def _end_task(*, completed: bool) -> sa.Select:
    """End the task (unless it has ended) and report it, in one statement that returns the
    result either way, and the task's age only when it ended the task. A completed task's
    non-blank result (its first `:remember_chars` characters; none at 0) is queued for
    long-term memory by the same statement."""
    end = (
        sa.update(Task)
        .where(Task.id == _TASK, none_of(Task.status, TERMINAL))
        .values(
            status=bindparam("new_status"),
            result=func.coalesce(_SINK_OUTPUTS if completed else sa.null(), Task.result),
            error=bindparam("new_error", type_=sa.Text),
            updated_at=func.now(),
        )
    )
    ended, reported = numbered_by_task_update(
        end, 1, Task.user_id, Task.description, Task.result,
        func.extract("epoch", func.now() - Task.created_at).label("age_secs"),
    )
    # Otherwise the result it had, as the statement's snapshot sees it.
    result = _SINK_OUTPUTS if completed else select(Task.result).where(Task.id == _TASK).scalar_subquery()
    statement = select(
        result.label("result"), select(ended.c.age_secs).scalar_subquery().label("age_secs")
    ).add_cte(reported)
    if not completed:
        return statement
    labels = labels_of(_TASK)
    metadata = func.jsonb_build_object(
        "source", "task_result", "task_id", _TASK, "description", func.left(ended.c.description, 200),
    ).op("||")(sa.case(
        (labels.is_not(None), func.jsonb_build_object("labels", labels)),
        else_=sa.cast(sa.literal("{}"), JSONB),
    ))
    remember = bindparam("remember_chars", type_=sa.Integer)
    queued = memory_outbox.queue_from(
        select(
            ended.c.user_id, func.left(ended.c.result, remember), metadata, _TASK,
            bindparam("source_key", type_=sa.Text),
        ).where(remember > 0, ended.c.result.regexp_match("[^[:space:]]"))
    )
    return statement.add_cte(queued)


_COMPLETE = _end_task(completed=True)
_END = _end_task(completed=False)


async def finish_task(
    engine: AsyncEngine,
    task_id: str,
    status: str,
    *,
    error: str | None = None,
    failed_step: int | None = None,
    remember_chars: int = 0,
) -> Finished:
    """Terminal status. A completed task's result is the output of the plan's sink steps
    (those nothing depends on), in order: one statement, no transaction.

    With `remember_chars`, a completed task's non-blank result (its first `remember_chars`
    characters) is queued for long-term memory by the same statement, once: only by the
    finish that actually ends the task. A task that fails or is cancelled also closes its
    open steps and tool calls, in one transaction with its end."""
    data: dict[str, Any] = {"status": status, **({"error": error} if error else {})}
    params = {
        **report_params(task_id, [Report("task.status", data, f"status:{status}")]),
        "new_status": status, "new_error": error, "remember_chars": remember_chars,
        "source_key": memory_outbox.result_source_key(task_id),
    }
    if status == "completed":
        async with single_statement(engine) as conn:
            row = (await conn.execute(_COMPLETE, params)).one()
    else:
        async with engine.begin() as conn:
            if failed_step is not None:
                await conn.execute(
                    _FAIL_STEP, {"task": task_id, "failed_step": failed_step, "new_error": error}
                )
            await conn.execute(
                _CLOSE_STEPS,
                {"task": task_id, "new_status": "cancelled" if status == "cancelled" else "skipped"},
            )
            await conn.execute(
                _DROP_CALLS, {"task": task_id, "reason": f"not run: the task ended first ({status})"}
            )
            row = (await conn.execute(_END, params)).one()
    return Finished(row.result, float(row.age_secs) if row.age_secs is not None else None)


# --- how a task ended, as the activities that run after it (remember, webhook) read it ---


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
