"""Reads and writes of provenance labels ("private", "untrusted"): on the task's plan, on each
tool call (its conversation when requested, what its result added) and on short-term memory
entries. What the labels mean and what follows from them: tools/provenance.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import ShortTermEntry, Task, ToolCall

_TASK = bindparam("task")
_STEP = bindparam("step")
_LABELS = bindparam("new_labels", type_=ARRAY(sa.Text))

_SET_RESULT_LABELS = (
    sa.update(ToolCall).where(ToolCall.id == bindparam("call")).values(result_labels=_LABELS)
)
_EARLIER_TURNS_LABELS = (
    sa.select(ToolCall.context_labels, ToolCall.result_labels)
    .where(
        ToolCall.task_id == _TASK, ToolCall.step_index == _STEP, ToolCall.turn < bindparam("turn")
    )
    .distinct()
)


def _union(rows: Iterable[Iterable[list[str] | None]]) -> list[str]:
    return sorted({label for row in rows for labels in row for label in labels or ()})


async def set_result_labels(conn: AsyncConnection, call_row_id: int, labels: list[str]) -> None:
    await conn.execute(_SET_RESULT_LABELS, {"call": call_row_id, "new_labels": labels})


async def earlier_turns_labels(
    engine: AsyncEngine, task_id: str, step_index: int, turn: int
) -> list[str]:
    """The labels of a step's conversation before `turn`: its prompt's (stored on the calls of
    every turn) and every earlier tool result's."""
    async with read(engine) as conn:
        rows = (
            await conn.execute(
                _EARLIER_TURNS_LABELS, {"task": task_id, "step": step_index, "turn": turn}
            )
        ).all()
    return _union(rows)


def labels_of(task: Any, *, other_than_step: Any = None) -> Any:
    """The labels of the task's plan and of its short-term memory entries (without those of
    step `other_than_step`, when given), sorted, NULL when none: an expression, so it rides
    along in another statement (the end of a task, the start of a step). Expired entries
    count too: what a prompt was given is a subset."""
    entries = sa.select(sa.func.unnest(ShortTermEntry.labels).label("label")).where(ShortTermEntry.task_id == task)
    if other_than_step is not None:
        entries = entries.where(ShortTermEntry.step_index.is_distinct_from(other_than_step))
    every = sa.union(
        sa.select(sa.func.unnest(Task.plan_labels).label("label")).where(Task.id == task), entries
    ).subquery("every_label")
    # Byte order, as Python's sorted() puts them.
    ordered = aggregate_order_by(every.c.label, every.c.label.collate("C"))
    return sa.select(sa.func.array_agg(ordered, type_=ARRAY(sa.Text))).select_from(every).scalar_subquery()
