"""Budgets: per task (tokens, USD) and per user per UTC day. Checked before every LLM call
with the call's worst case (prompt estimate + max_tokens); a call that would exceed a budget
is not made. Parallel steps of one task may each pass the check at once, so the overshoot is
at most the calls in flight for that task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data.engine import read
from durable_orchestrator.llm.pricing import cost_usd
from durable_orchestrator.settings import Settings

BUDGET_EXCEEDED = "BudgetExceeded"


@dataclass(frozen=True)
class Budget:
    max_tokens: int | None = None
    max_cost_usd: float | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> Budget:
        raw = (options or {}).get("budget") or {}
        return cls(raw.get("max_tokens"), raw.get("max_cost_usd"))


def effective_task_budget(requested: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """What a new task stores in tasks.options["budget"]: the request, else the defaults."""
    requested = requested or {}
    return {
        "max_tokens": requested.get("max_tokens", settings.default_task_max_tokens),
        "max_cost_usd": requested.get("max_cost_usd", settings.default_task_max_cost_usd),
    }


def estimate_prompt_tokens(messages: list[dict[str, Any]], extra: Any = None) -> int:
    """Rough and pessimistic enough: 4 characters per token over everything sent."""
    chars = sum(len(json.dumps(m.get("content") or "")) for m in messages)
    chars += sum(len(json.dumps(m.get("tool_calls"))) for m in messages if m.get("tool_calls"))
    if extra:
        chars += len(json.dumps(extra))
    return chars // 4 + 1


def applies(options: dict[str, Any] | None, settings: Settings) -> bool:
    """Whether any budget limits this task's calls: one in its options, or a daily user limit."""
    b = Budget.from_options(options)
    return (
        b.max_tokens is not None
        or b.max_cost_usd is not None
        or settings.user_daily_max_tokens is not None
        or settings.user_daily_max_cost_usd is not None
    )


def _exceeded(message: str) -> ApplicationError:
    return ApplicationError(f"budget_exceeded: {message}", type=BUDGET_EXCEEDED, non_retryable=True)


async def check(
    engine: AsyncEngine,
    settings: Settings,
    *,
    task_id: str,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    extra: Any = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Raise a non-retryable BudgetExceeded ApplicationError if the next call could exceed a
    budget of the task or of its user today. `options`: the task's options when the caller
    already has them; then a task without any budget costs no database work at all."""
    if isinstance(options, str):
        options = json.loads(options or "{}")
    if options is not None and not applies(options, settings):
        return
    prompt = estimate_prompt_tokens(messages, extra)
    completion = max_tokens or settings.llm_max_tokens
    worst_tokens = prompt + completion
    worst_cost, _ = cost_usd(model, prompt, completion)
    daily = settings.user_daily_max_tokens is not None or settings.user_daily_max_cost_usd is not None
    async with read(engine) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT t.user_id, t.options, "
                    "(SELECT COALESCE(sum(c.prompt_tokens + c.completion_tokens), 0) FROM llm_calls c "
                    " WHERE c.task_id = t.id) AS tokens, "
                    "(SELECT COALESCE(sum(c.cost_usd), 0) FROM llm_calls c WHERE c.task_id = t.id) AS cost "
                    "FROM tasks t WHERE t.id=:t"
                ),
                {"t": task_id},
            )
        ).first()
        if row is None:
            raise LookupError(f"task {task_id} does not exist")
        user_tokens, user_cost = 0, Decimal(0)
        if daily:
            u = (
                await conn.execute(
                    sa.text(
                        "SELECT COALESCE(sum(c.prompt_tokens + c.completion_tokens), 0), "
                        "COALESCE(sum(c.cost_usd), 0) FROM llm_calls c JOIN tasks t ON t.id = c.task_id "
                        "WHERE t.user_id=:u AND c.created_at >= "
                        "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
                    ),
                    {"u": row.user_id},
                )
            ).first()
            user_tokens, user_cost = int(u[0]), Decimal(u[1])
    options = row.options if isinstance(row.options, dict) else json.loads(row.options or "{}")
    budget = Budget.from_options(options)
    spent_tokens, spent_cost = int(row.tokens), Decimal(row.cost)
    if budget.max_tokens is not None and spent_tokens + worst_tokens > budget.max_tokens:
        raise _exceeded(
            f"task token budget {budget.max_tokens} would be exceeded "
            f"(spent {spent_tokens}, next call up to {worst_tokens})"
        )
    if budget.max_cost_usd is not None and spent_cost + worst_cost > Decimal(str(budget.max_cost_usd)):
        raise _exceeded(
            f"task cost budget ${budget.max_cost_usd} would be exceeded "
            f"(spent ${spent_cost}, next call up to ${worst_cost})"
        )
    if settings.user_daily_max_tokens is not None and user_tokens + worst_tokens > settings.user_daily_max_tokens:
        raise _exceeded(
            f"daily token budget {settings.user_daily_max_tokens} of user {row.user_id} would be "
            f"exceeded (spent today {user_tokens}, next call up to {worst_tokens})"
        )
    if settings.user_daily_max_cost_usd is not None and user_cost + worst_cost > Decimal(
        str(settings.user_daily_max_cost_usd)
    ):
        raise _exceeded(
            f"daily cost budget ${settings.user_daily_max_cost_usd} of user {row.user_id} would be "
            f"exceeded (spent today ${user_cost}, next call up to ${worst_cost})"
        )
