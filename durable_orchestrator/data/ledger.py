"""The LLM ledger: one row per answered call, what budgets and the usage report add up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import LLMCall, Task
from durable_orchestrator.llm.pricing import cost_usd

# A re-delivered activity attempt lands on the row its first delivery wrote.
_RECORD = insert(LLMCall).on_conflict_do_nothing(index_elements=[LLMCall.call_key])


async def record_llm_call(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int | None,
    purpose: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: int,
    call_key: str,
) -> Decimal:
    cost, priced = cost_usd(model, prompt_tokens, completion_tokens)
    await conn.execute(
        _RECORD,
        {
            "task_id": task_id,
            "step_index": step_index,
            "purpose": purpose,
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": cost,
            "priced": priced,
            "latency_ms": latency_ms,
            "call_key": call_key,
        },
    )
    return cost


# --- spend, for budgets -------------------------------------------------------------------------


@dataclass
class Spend:
    """What a task (and its user, today) has spent so far, with the task's budget options."""

    user_id: str
    options: dict[str, Any]
    task_tokens: int
    task_cost: Decimal
    user_tokens_today: int = 0
    user_cost_today: Decimal = Decimal(0)


_TOKENS = func.coalesce(func.sum(LLMCall.prompt_tokens + LLMCall.completion_tokens), 0)
_COST = func.coalesce(func.sum(LLMCall.cost_usd), 0)

_TASK_SPEND = select(
    Task.user_id,
    Task.options,
    select(_TOKENS).where(LLMCall.task_id == Task.id).scalar_subquery().label("tokens"),
    select(_COST).where(LLMCall.task_id == Task.id).scalar_subquery().label("cost"),
).where(Task.id == bindparam("task"))


def _utc(ts: Any) -> Any:
    """`ts AT TIME ZONE 'UTC'`."""
    return func.timezone("UTC", ts)


_USER_SPEND_TODAY = (
    select(_TOKENS, _COST)
    .join_from(LLMCall, Task, Task.id == LLMCall.task_id)
    .where(
        Task.user_id == bindparam("user"),
        LLMCall.created_at >= _utc(func.date_trunc("day", _utc(func.now()))),
    )
)


async def spend(engine: AsyncEngine, task_id: str, *, user_today: bool) -> Spend:
    """The task's spend; with `user_today`, also its user's since midnight UTC (one
    connection, a second statement)."""
    async with read(engine) as conn:
        row = (await conn.execute(_TASK_SPEND, {"task": task_id})).first()
        if row is None:
            raise LookupError(f"task {task_id} does not exist")
        result = Spend(row.user_id, row.options, int(row.tokens), Decimal(row.cost))
        if user_today:
            tokens, cost = (await conn.execute(_USER_SPEND_TODAY, {"user": row.user_id})).one()
            result.user_tokens_today, result.user_cost_today = int(tokens), Decimal(cost)
    return result


# --- the usage report -------------------------------------------------------------------------

GroupBy = Literal["model", "day", "task"]

_GROUP_KEY = {
    "model": LLMCall.model,
    "day": func.to_char(_utc(LLMCall.created_at), "YYYY-MM-DD"),
    "task": LLMCall.task_id,
}


@dataclass
class UsageRow:
    key: str
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    unpriced_calls: int  # calls of models missing from the price table (counted at $0)


async def usage(
    engine: AsyncEngine,
    user_id: str,
    group_by: GroupBy,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[UsageRow]:
    """The user's calls in [start, end), grouped and in key order."""
    key = _GROUP_KEY[group_by]
    query = (
        select(
            key.label("key"),
            func.count().label("llm_calls"),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0).label("completion_tokens"),
            _COST.label("cost_usd"),
            func.count().filter(sa.not_(LLMCall.priced)).label("unpriced_calls"),
        )
        .join_from(LLMCall, Task, Task.id == LLMCall.task_id)
        .where(Task.user_id == user_id)
        .group_by(key)
        .order_by(key)
    )
    if start is not None:
        query = query.where(LLMCall.created_at >= start)
    if end is not None:
        query = query.where(LLMCall.created_at < end)
    async with engine.connect() as conn:
        rows = await conn.execute(query)
        return [UsageRow(str(r.key), *r[1:]) for r in rows]
