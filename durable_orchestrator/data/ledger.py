"""The LLM ledger: one row per LLM call, written before the call as a reservation of its worst
case and settled with its usage after (or released when it failed). Budgets and the usage
report add it up; a row still `reserved` counts at its worst case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import bindparam, case, func, literal
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.engine import read, single_statement
from durable_orchestrator.data.tables import LLMCall, Task
from durable_orchestrator.llm.pricing import cost_usd

# What a row counts for: its usage once settled (0 when released), its worst case until then.
_COUNTED_TOKENS = case(
    (LLMCall.status == "reserved", LLMCall.reserved_tokens),
    else_=LLMCall.prompt_tokens + LLMCall.completion_tokens,
)
_COUNTED_COST = case(
    (LLMCall.status == "reserved", LLMCall.reserved_cost_usd), else_=LLMCall.cost_usd
)
_TOKENS = func.coalesce(func.sum(_COUNTED_TOKENS), 0)
_COST = func.coalesce(func.sum(_COUNTED_COST), 0)


def _utc(ts: Any) -> Any:
    """`ts AT TIME ZONE 'UTC'`."""
    return func.timezone("UTC", ts)


_TODAY_UTC = _utc(func.date_trunc("day", _utc(func.now())))


@dataclass(frozen=True)
class Caps:
    """The limits one reservation must stay within; None = unlimited."""

    task_tokens: int | None = None
    task_cost: Decimal | None = None
    user_tokens_today: int | None = None
    user_cost_today: Decimal | None = None

    def any(self) -> bool:
        return any(
            c is not None
            for c in (
                self.task_tokens,
                self.task_cost,
                self.user_tokens_today,
                self.user_cost_today,
            )
        )


@dataclass(frozen=True)
class Reservation:
    task_id: str
    step_index: int | None
    purpose: str
    model: str  # the model asked for
    call_key: str
    tokens: int  # worst case: prompt + max_tokens
    cost: Decimal  # worst case in USD (0 when unpriced)
    priced: bool


@dataclass
class Spend:
    """What a task (and its user, today) has spent so far, reserved worst cases included."""

    user_id: str
    task_tokens: int
    task_cost: Decimal
    user_tokens_today: int = 0
    user_cost_today: Decimal = Decimal(0)


def _task_sum(expr: Any) -> Any:
    return select(expr).where(LLMCall.task_id == Task.id).scalar_subquery()


def _user_today_sum(expr: Any) -> Any:
    return (
        select(expr)
        .where(LLMCall.user_id == Task.user_id, LLMCall.created_at >= _TODAY_UTC)
        .scalar_subquery()
    )


_SPEND_COLUMNS = (
    Task.user_id.label("user_id"),
    _task_sum(_TOKENS).label("task_tokens"),
    _task_sum(_COST).label("task_cost"),
    _user_today_sum(_TOKENS).label("user_tokens_today"),
    _user_today_sum(_COST).label("user_cost_today"),
)


def _within(spend: Any, r: Reservation, caps: Caps) -> list[Any]:
    conditions = []
    if caps.task_tokens is not None:
        conditions.append(spend.c.task_tokens + r.tokens <= caps.task_tokens)
    if caps.task_cost is not None:
        conditions.append(spend.c.task_cost + r.cost <= caps.task_cost)
    if caps.user_tokens_today is not None:
        conditions.append(spend.c.user_tokens_today + r.tokens <= caps.user_tokens_today)
    if caps.user_cost_today is not None:
        conditions.append(spend.c.user_cost_today + r.cost <= caps.user_cost_today)
    return conditions


_RESERVE_COLUMNS = [
    "task_id",
    "user_id",
    "step_index",
    "purpose",
    "model",
    "requested_model",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "priced",
    "reserved_tokens",
    "reserved_cost_usd",
    "latency_ms",
    "call_key",
]

# Serialises the reservations of one user (and so of each of their tasks): under READ COMMITTED
# the next statement's snapshot then holds every reservation committed before it.
_LOCK_USER = select(
    Task.user_id, func.pg_advisory_xact_lock(func.hashtextextended("ledger:" + Task.user_id, 0))
).where(Task.id == bindparam("task"))


def _param(name: str, type_: Any) -> Any:
    return bindparam(name, type_=type_)


def _reserve_values(user_id: Any) -> Any:
    """The pending row, as bound parameters (`_reserve_params`) and the user column given."""
    return select(
        _param("task_id", sa.String), user_id, _param("step_index", sa.Integer),
        _param("purpose", sa.String), _param("model", sa.String), _param("model", sa.String),
        literal("reserved"), literal(0), literal(0), literal(Decimal(0), sa.Numeric(18, 8)),
        _param("priced", sa.Boolean), _param("tokens", sa.Integer),
        _param("cost", sa.Numeric(18, 8)), literal(0), _param("call_key", sa.String),
    )


def _reserve_params(r: Reservation) -> dict[str, Any]:
    return {
        "task_id": r.task_id, "step_index": r.step_index, "purpose": r.purpose, "model": r.model,
        "priced": r.priced, "tokens": r.tokens, "cost": r.cost, "call_key": r.call_key,
    }


def _reserve_statement(r: Reservation, caps: Caps) -> Any:
    """One statement: the spend so far, and the pending row inserted only if the call's worst
    case fits every cap on top of it; returns the spend and the new row's id (NULL if not)."""
    spend = select(*_SPEND_COLUMNS).where(Task.id == bindparam("task_id")).cte("spend")
    inserted = (
        insert(LLMCall)
        .from_select(_RESERVE_COLUMNS, _reserve_values(spend.c.user_id).where(*_within(spend, r, caps)))
        .on_conflict_do_nothing(index_elements=[LLMCall.call_key])
        .returning(LLMCall.id)
        .cte("inserted")
    )
    return select(spend, select(inserted.c.id).scalar_subquery().label("reserved_id"))


# Without caps (no budget applies) there is nothing to add up or lock: the pending row is written
# as it is, by one statement built once (building it per call was a few percent of a worker's CPU).
_RESERVE_UNCAPPED = (
    insert(LLMCall)
    .from_select(_RESERVE_COLUMNS, _reserve_values(Task.user_id).where(Task.id == bindparam("task_id")))
    .on_conflict_do_nothing(index_elements=[LLMCall.call_key])
)


async def reserve(engine: AsyncEngine, r: Reservation, caps: Caps) -> Spend | None:
    """Write the pending row of a call if its worst case fits every cap: None when reserved,
    else what had been spent when it was refused, and nothing is written."""
    if not caps.any():
        async with single_statement(engine) as conn:
            await conn.execute(_RESERVE_UNCAPPED, _reserve_params(r))
        return None
    async with engine.begin() as conn:
        if (await conn.execute(_LOCK_USER, {"task": r.task_id})).first() is None:
            raise LookupError(f"task {r.task_id} does not exist")
        row = (await conn.execute(_reserve_statement(r, caps), _reserve_params(r))).one()
        if row.reserved_id is not None:
            return None
        if await conn.scalar(select(LLMCall.id).where(LLMCall.call_key == r.call_key)) is not None:
            return None  # this very call was reserved before (a repeated delivery)
        return Spend(
            row.user_id,
            int(row.task_tokens),
            Decimal(row.task_cost),
            int(row.user_tokens_today),
            Decimal(row.user_cost_today),
        )


_SETTLE_COLUMNS = [
    "task_id",
    "user_id",
    "step_index",
    "purpose",
    "model",
    "requested_model",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "priced",
    "latency_ms",
    "call_key",
]
# What settling overwrites on the reserved row.
_SETTLED = ("model", "status", "prompt_tokens", "completion_tokens", "cost_usd", "priced", "latency_ms")


def _settle_statement() -> Any:
    values = select(
        _param("task_id", sa.String), Task.user_id, _param("step_index", sa.Integer),
        _param("purpose", sa.String), _param("model", sa.String),
        _param("requested_model", sa.String), literal("settled"),
        _param("prompt_tokens", sa.Integer), _param("completion_tokens", sa.Integer),
        _param("cost", sa.Numeric(18, 8)), _param("priced", sa.Boolean),
        _param("latency_ms", sa.Integer), _param("call_key", sa.String),
    ).where(Task.id == bindparam("task_id"))
    statement = insert(LLMCall).from_select(_SETTLE_COLUMNS, values)
    return statement.on_conflict_do_update(
        index_elements=[LLMCall.call_key], set_={k: getattr(statement.excluded, k) for k in _SETTLED}
    )


_SETTLE = _settle_statement()


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
    requested_model: str | None = None,
    overrides_file: Any = None,
) -> Decimal:
    """Settle a call with its usage, priced by the model that answered (else the one asked
    for). Writes the row if no reservation was made for it."""
    cost, priced = cost_usd(
        model,
        prompt_tokens,
        completion_tokens,
        requested=requested_model,
        overrides_file=overrides_file,
    )
    await conn.execute(_SETTLE, {
        "task_id": task_id, "step_index": step_index, "purpose": purpose, "model": model,
        "requested_model": requested_model or model, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens, "cost": cost, "priced": priced,
        "latency_ms": latency_ms, "call_key": call_key,
    })
    return cost


_RELEASE = (
    sa.update(LLMCall)
    .where(LLMCall.call_key == bindparam("key"), LLMCall.status == "reserved")
    .values(status="released")
)


async def release(engine: AsyncEngine, call_key: str) -> None:
    """The call failed without an answer: its reservation no longer counts."""
    async with engine.begin() as conn:
        await conn.execute(_RELEASE, {"key": call_key})


# --- spend, for budgets -------------------------------------------------------------------------

_TASK_SPEND = select(*_SPEND_COLUMNS).where(Task.id == bindparam("task"))


async def spend(engine: AsyncEngine, task_id: str) -> Spend:
    """The task's spend and its user's since midnight UTC, reserved worst cases included."""
    async with read(engine) as conn:
        row = (await conn.execute(_TASK_SPEND, {"task": task_id})).first()
    if row is None:
        raise LookupError(f"task {task_id} does not exist")
    return Spend(
        row.user_id,
        int(row.task_tokens),
        Decimal(row.task_cost),
        int(row.user_tokens_today),
        Decimal(row.user_cost_today),
    )


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
    unpriced_calls: int  # calls of models without a known price (counted at $0)
    pending_calls: int = 0  # reserved, never settled: outcome unknown (their worker died)
    pending_cost_usd: Decimal = Decimal(0)  # those calls' reserved worst case


_PENDING = LLMCall.status == "reserved"


async def usage(
    engine: AsyncEngine,
    user_id: str,
    group_by: GroupBy,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[UsageRow]:
    """The user's calls in [start, end), grouped and in key order; released reservations
    (calls that failed unanswered) are not calls."""
    key = _GROUP_KEY[group_by]
    query = (
        select(
            key.label("key"),
            func.count().label("llm_calls"),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(LLMCall.cost_usd), 0).label("cost_usd"),
            func.count().filter(sa.not_(LLMCall.priced), sa.not_(_PENDING)).label("unpriced_calls"),
            func.count().filter(_PENDING).label("pending_calls"),
            func.coalesce(func.sum(LLMCall.reserved_cost_usd).filter(_PENDING), 0).label(
                "pending_cost_usd"
            ),
        )
        .where(LLMCall.user_id == user_id, LLMCall.status != "released")
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
