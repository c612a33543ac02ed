"""Budgets: per task (tokens, USD) and per user per UTC day, enforced as reservations.

Before each LLM call its worst case (prompt tokens counted with the model's tokenizer, plus all
of `max_tokens`, priced at the dearest model the call may fall back to) is reserved in the
ledger; the check against every cap and the insert are one statement under a per-user lock, so
concurrent calls of one user cannot all pass the same check. After the call the row is settled
with the real usage, or released if the call failed. The ledger can therefore exceed a cap only
by what a settled call used beyond its reservation (the estimation error of a call).

A task's caps are fixed at submission: the request's fields, each no higher than the operator's
(`ORCH_DEFAULT_TASK_MAX_*`), which also fill in every field the request leaves out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data import ledger
from durable_orchestrator.llm.pricing import prices
from durable_orchestrator.llm.token_estimate import count_prompt_tokens
from durable_orchestrator.settings import Settings

BUDGET_EXCEEDED = "BudgetExceeded"
UNPRICED_MODEL = "UnpricedModel"

# request field -> the operator setting that caps it
_TASK_CAPS = {"max_tokens": "default_task_max_tokens", "max_cost_usd": "default_task_max_cost_usd"}


class BudgetAboveCap(ValueError):
    """A request asked for more than the operator allows."""

    def __init__(self, field: str, setting: str, requested: float, cap: float) -> None:
        super().__init__(
            f"budget.{field} {requested:g} is above the operator's cap {cap:g} "
            f"(ORCH_{setting.upper()}); ask for at most that, or leave it out to get it"
        )
        self.field = field
        self.setting = setting


def effective_task_budget(requested: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """What a new task stores in tasks.options["budget"]: each field the request sets (a field
    set to null counts as left out), else the operator's default; a value above the operator's
    default raises BudgetAboveCap."""
    requested = requested or {}
    budget: dict[str, Any] = {}
    for field, setting in _TASK_CAPS.items():
        cap = getattr(settings, setting)
        value = requested.get(field)
        if value is not None and cap is not None and value > cap:
            raise BudgetAboveCap(field, setting, value, cap)
        budget[field] = value if value is not None else cap
    return budget


@dataclass(frozen=True)
class WorstCase:
    """The most one call can use: its prompt and all of max_tokens, at the dearest model of
    its fallback chain; `unpriced`: the models of that chain without a known price."""

    tokens: int
    cost: Decimal
    unpriced: tuple[str, ...]


def worst_case(
    settings: Settings,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    extra: Any = None,
) -> WorstCase:
    table = prices(settings.prices_file)
    completion = max_tokens or settings.llm_max_tokens
    chain = list(dict.fromkeys([model, *settings.model_fallbacks]))
    tokens, cost, unpriced = 0, Decimal(0), []
    for candidate in chain:
        prompt = count_prompt_tokens(candidate, messages, extra)
        tokens = max(tokens, prompt + completion)
        unit = table.unit_price(candidate)
        if unit is None:
            unpriced.append(candidate)
        else:
            cost = max(cost, unit.cost(prompt, completion))
    return WorstCase(tokens, cost, tuple(unpriced))


def warm_up(settings: Settings, models: list[str] | tuple[str, ...] = ()) -> None:
    """Load the price table and the tokenizers of these models (and the configured chain)
    now: the first load takes a second or more of CPU, which inside an activity would stall
    the worker's event loop past its heartbeats. Call it off the loop (a thread) at start."""
    messages = [{"role": "user", "content": "warm up"}]
    for model in dict.fromkeys([settings.model, *settings.model_fallbacks, *models]):
        worst_case(settings, model, messages, 1)


def caps_of(options: dict[str, Any] | str | None, settings: Settings) -> ledger.Caps:
    if isinstance(options, str):  # JSONB read as text by some drivers' paths
        options = json.loads(options or "{}")
    raw = (options or {}).get("budget") or {}

    def usd(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return ledger.Caps(
        task_tokens=raw.get("max_tokens"),
        task_cost=usd(raw.get("max_cost_usd")),
        user_tokens_today=settings.user_daily_max_tokens,
        user_cost_today=usd(settings.user_daily_max_cost_usd),
    )


def _exceeded(message: str) -> ApplicationError:
    return ApplicationError(f"budget_exceeded: {message}", type=BUDGET_EXCEEDED, non_retryable=True)


def _unpriced(models: tuple[str, ...]) -> ApplicationError:
    names = ", ".join(repr(m) for m in models)
    return ApplicationError(
        f"unpriced_model: no price is known for model {names}, so a USD budget (the task's "
        "max_cost_usd or ORCH_USER_DAILY_MAX_COST_USD) cannot be enforced; add its price to "
        "ORCH_PRICES_FILE",
        type=UNPRICED_MODEL,
        non_retryable=True,
    )


def _refusal(caps: ledger.Caps, spend: ledger.Spend, worst: WorstCase) -> ApplicationError:
    if caps.task_tokens is not None and spend.task_tokens + worst.tokens > caps.task_tokens:
        return _exceeded(
            f"task token budget {caps.task_tokens} would be exceeded "
            f"(spent {spend.task_tokens}, next call up to {worst.tokens})"
        )
    if caps.task_cost is not None and spend.task_cost + worst.cost > caps.task_cost:
        return _exceeded(
            f"task cost budget ${caps.task_cost} would be exceeded "
            f"(spent ${spend.task_cost}, next call up to ${worst.cost})"
        )
    if (
        caps.user_tokens_today is not None
        and spend.user_tokens_today + worst.tokens > caps.user_tokens_today
    ):
        return _exceeded(
            f"daily token budget {caps.user_tokens_today} of user {spend.user_id} would be exceeded "
            f"(spent today {spend.user_tokens_today}, next call up to {worst.tokens}; "
            "ORCH_USER_DAILY_MAX_TOKENS)"
        )
    if (
        caps.user_cost_today is not None
        and spend.user_cost_today + worst.cost > caps.user_cost_today
    ):
        return _exceeded(
            f"daily cost budget ${caps.user_cost_today} of user {spend.user_id} would be exceeded "
            f"(spent today ${spend.user_cost_today}, next call up to ${worst.cost}; "
            "ORCH_USER_DAILY_MAX_COST_USD)"
        )
    return _exceeded(f"the next call (up to {worst.tokens} tokens, ${worst.cost}) does not fit")


async def reserve(
    engine: AsyncEngine,
    settings: Settings,
    *,
    task_id: str,
    step_index: int | None,
    purpose: str,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    call_key: str,
    extra: Any = None,
    options: dict[str, Any] | None = None,
) -> WorstCase:
    """Write the call's pending ledger row, or raise a non-retryable BudgetExceeded (or
    UnpricedModel) ApplicationError, writing nothing, if its worst case could break a cap."""
    worst = worst_case(settings, model, messages, max_tokens, extra)
    caps = caps_of(options, settings)
    if worst.unpriced and (caps.task_cost is not None or caps.user_cost_today is not None):
        raise _unpriced(worst.unpriced)
    reservation = ledger.Reservation(
        task_id=task_id,
        step_index=step_index,
        purpose=purpose,
        model=model,
        call_key=call_key,
        tokens=worst.tokens,
        cost=worst.cost,
        priced=not worst.unpriced,
    )
    spend = await ledger.reserve(engine, reservation, caps)
    if spend is not None:
        raise _refusal(caps, spend, worst)
    return worst
