"""GET /tasks/{id}: the whole task with its steps, their tool calls and costs, in one query
(PostgreSQL builds the nested JSON, so it is one round trip however many steps there are)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, literal_column
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import LLMCall, Step, Task, ToolCall


def _object(**fields: Any) -> Any:
    """json_build_object('key', value, ...). The keys are SQL constants, not parameters: as
    parameters, the view's forty keys cost about 15% more client CPU per read (measured)."""
    return func.json_build_object(*(x for key, value in fields.items() for x in (_constant(key), value)))


def _constant(key: str) -> Any:
    if not key.isidentifier():  # our own field names: nothing to quote
        raise ValueError(f"not a plain key: {key!r}")
    return literal_column(f"'{key}'")


def _json_list(element: Any, *order_by: Any) -> Any:
    """json_agg of `element` in order, [] when there is nothing (json_agg gives NULL)."""
    return func.coalesce(func.json_agg(aggregate_order_by(element, *order_by)), func.json_build_array())


def _cost(*where: Any, **extra: Any) -> Any:
    return (
        select(
            _object(
                usd=func.coalesce(func.sum(LLMCall.cost_usd), 0),
                prompt_tokens=func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
                completion_tokens=func.coalesce(func.sum(LLMCall.completion_tokens), 0),
                **extra,
            )
        )
        .where(*where)
        .scalar_subquery()
    )


_TOOL_CALLS = (
    select(
        _json_list(
            _object(
                turn=ToolCall.turn, seq=ToolCall.seq, call_id=ToolCall.call_id, tool=ToolCall.tool,
                arguments=ToolCall.arguments, status=ToolCall.status, result=ToolCall.result,
                error=ToolCall.error, latency_ms=ToolCall.latency_ms, approval_id=ToolCall.approval_id,
                decision=ToolCall.decision, decision_comment=ToolCall.decision_comment,
                created_at=ToolCall.created_at, finished_at=ToolCall.finished_at,
            ),
            ToolCall.turn, ToolCall.seq,
        )
    )
    .where(ToolCall.task_id == Step.task_id, ToolCall.step_index == Step.index)
    .scalar_subquery()
)

_STEPS = (
    select(
        _json_list(
            _object(
                index=Step.index, agent=Step.agent, title=Step.title,
                instructions=Step.instructions, depends_on=Step.depends_on,
                status=Step.status, output=Step.output, error=Step.error, model=Step.model,
                started_at=Step.started_at, finished_at=Step.finished_at,
                reused_from_task_id=Step.reused_from_task_id,
                cost=_cost(LLMCall.task_id == Step.task_id, LLMCall.step_index == Step.index),
                tool_calls=_TOOL_CALLS,
            ),
            Step.index,
        )
    )
    .where(Step.task_id == Task.id)
    .scalar_subquery()
)

_child = aliased(Task)
# Reruns of this task, oldest first (only the caller's own tasks can be anyone's reruns).
_RERUNS = (
    select(_json_list(_child.id, _child.created_at, _child.id))
    .where(_child.parent_task_id == Task.id)
    .scalar_subquery()
)

_VIEW = select(
    Task.id, Task.user_id, Task.description, Task.meta.label("metadata"), Task.status, Task.result,
    Task.error, Task.workflow_id, Task.created_at, Task.updated_at, Task.plan_fallback, Task.plan_errors,
    Task.plan_source, Task.parent_task_id, Task.rerun_of_step, _RERUNS.label("reruns"),
    _STEPS.label("steps"),
    _cost(
        LLMCall.task_id == Task.id, llm_calls=func.count(LLMCall.id).filter(LLMCall.status != "released")
    ).label("cost"),
).where(Task.id == bindparam("task"), Task.user_id == bindparam("user"))


async def get_task_view(engine: AsyncEngine, task_id: str, user_id: str) -> dict[str, Any] | None:
    """The whole task as the API shows it, in one round trip."""
    async with read(engine) as conn:
        row = (await conn.execute(_VIEW, {"task": task_id, "user": user_id})).mappings().first()
    return dict(row) if row else None
