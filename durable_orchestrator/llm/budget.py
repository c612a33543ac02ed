"""Budgets: per task (tokens, USD) and per user per UTC day. Checked before every LLM call
with the call's worst case (prompt estimate + max_tokens); a call that would exceed a budget
is not made. Parallel steps of one task may each pass the check at once, so the overshoot is
at most the calls in flight for that task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data import ledger
from durable_orchestrator.llm.pricing import cost_usd
from durable_orchestrator.llm.token_estimate import estimate_prompt_tokens
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


@dataclass(frozen=True)
class _WorstCase:
    """The most the next call can cost: its estimated prompt and all of max_tokens."""

    tokens: int
    cost: Decimal


def _worst_case(
    settings: Settings, model: str, messages: list[dict[str, Any]], max_tokens: int | None, extra: Any
) -> _WorstCase:
    prompt = estimate_prompt_tokens(messages, extra)
    completion = max_tokens or settings.llm_max_tokens
    cost, _ = cost_usd(model, prompt, completion)
    return _WorstCase(prompt + completion, cost)


def _check_task(spend: ledger.Spend, worst: _WorstCase) -> None:
    budget = Budget.from_options(spend.options)
    if budget.max_tokens is not None and spend.task_tokens + worst.tokens > budget.max_tokens:
        raise _exceeded(
            f"task token budget {budget.max_tokens} would be exceeded "
            f"(spent {spend.task_tokens}, next call up to {worst.tokens})"
        )
    if budget.max_cost_usd is not None and spend.task_cost + worst.cost > Decimal(str(budget.max_cost_usd)):
        raise _exceeded(
            f"task cost budget ${budget.max_cost_usd} would be exceeded "
            f"(spent ${spend.task_cost}, next call up to ${worst.cost})"
        )


def _check_user_today(settings: Settings, spend: ledger.Spend, worst: _WorstCase) -> None:
    max_tokens, max_cost = settings.user_daily_max_tokens, settings.user_daily_max_cost_usd
    if max_tokens is not None and spend.user_tokens_today + worst.tokens > max_tokens:
        raise _exceeded(
            f"daily token budget {max_tokens} of user {spend.user_id} would be "
            f"exceeded (spent today {spend.user_tokens_today}, next call up to {worst.tokens})"
        )
    if max_cost is not None and spend.user_cost_today + worst.cost > Decimal(str(max_cost)):
        raise _exceeded(
            f"daily cost budget ${max_cost} of user {spend.user_id} would be "
            f"exceeded (spent today ${spend.user_cost_today}, next call up to ${worst.cost})"
        )


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
    worst = _worst_case(settings, model, messages, max_tokens, extra)
    daily = settings.user_daily_max_tokens is not None or settings.user_daily_max_cost_usd is not None
    spend = await ledger.spend(engine, task_id, user_today=daily)
    _check_task(spend, worst)
    _check_user_today(settings, spend, worst)
