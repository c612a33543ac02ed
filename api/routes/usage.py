"""/usage: the caller's LLM usage and cost from the ledger, grouped by model, day or task."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import EngineDep, require
from api.errors import ERROR_RESPONSES, APIError
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import ledger, reruns

router = APIRouter(prefix="/usage", tags=["usage"], responses=ERROR_RESPONSES)

ReadUser = Annotated[Principal, require("tasks:read")]

class UsageRow(BaseModel):
    key: str
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    unpriced_calls: int = Field(
        description="Answered calls of models without a known price (genai-prices, ORCH_PRICES_FILE), counted at $0."
    )
    pending_calls: int = Field(
        0, description="Calls reserved but never settled (their worker died mid-call): the "
        "provider may have billed them; budgets count them at their reserved worst case."
    )
    pending_cost_usd: float = Field(0.0, description="The reserved worst case of the pending calls.")


class SavedByReuse(BaseModel):
    """What reruns did not spend: the recorded cost of the outputs they reused."""

    reused_steps: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user_id: str
    group_by: Literal["model", "day", "task"]
    from_: datetime | None = Field(None, alias="from")
    to: datetime | None = None
    items: list[UsageRow]
    total: UsageRow
    saved_by_reuse: SavedByReuse = Field(
        description="Over your reruns created in the period: the calls, tokens and USD that "
        "their reused steps had cost when first run, and did not cost again."
    )


def _bound(name: str, value: str | None, *, end: bool) -> datetime | None:
    """ISO date (a whole UTC day; `to` includes it) or ISO datetime (naive = UTC)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return _add_day(start) if end else start
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise APIError(
            422, "validation_error", f"invalid request: {name}",
            [{"field": name, "message": "expected an ISO date (2026-11-23) or datetime"}],
        ) from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: the bound is the end of time
        return datetime.min.replace(tzinfo=UTC) if dt.year == 1 else datetime.max.replace(tzinfo=UTC)


def _add_day(start: datetime) -> datetime:
    try:
        return start + timedelta(days=1)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


# What `_bound` accepts, so the OpenAPI document admits nothing it refuses.
_DATE_OR_DATETIME = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}


@router.get("", response_model=UsageReport, summary="Your token usage and cost")
async def usage(
    principal: ReadUser,
    engine: EngineDep,
    group_by: Literal["model", "day", "task"] = "model",
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO date or datetime, inclusive",
              json_schema_extra=_DATE_OR_DATETIME),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="ISO date (inclusive) or datetime (exclusive)",
              json_schema_extra=_DATE_OR_DATETIME),
    ] = None,
) -> UsageReport:
    start, end = _bound("from", from_, end=False), _bound("to", to, end=True)
    rows = await ledger.usage(engine, principal.user_id, group_by, start=start, end=end)
    items = [
        UsageRow(
            key=r.key, llm_calls=r.llm_calls, prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens, total_tokens=r.prompt_tokens + r.completion_tokens,
            cost_usd=float(r.cost_usd), unpriced_calls=r.unpriced_calls,
            pending_calls=r.pending_calls, pending_cost_usd=float(r.pending_cost_usd),
        )
        for r in rows
    ]
    total = UsageRow(
        key="total",
        llm_calls=sum(i.llm_calls for i in items),
        prompt_tokens=sum(i.prompt_tokens for i in items),
        completion_tokens=sum(i.completion_tokens for i in items),
        total_tokens=sum(i.total_tokens for i in items),
        cost_usd=float(sum(r.cost_usd for r in rows)),
        unpriced_calls=sum(i.unpriced_calls for i in items),
        pending_calls=sum(i.pending_calls for i in items),
        pending_cost_usd=float(sum(r.pending_cost_usd for r in rows)),
    )
    saved = await reruns.saved_by_reuse(engine, principal.user_id, start=start, end=end)
    return UsageReport(
        user_id=principal.user_id, group_by=group_by, from_=start, to=end, items=items, total=total,
        saved_by_reuse=SavedByReuse(
            reused_steps=saved.reused_steps, llm_calls=saved.llm_calls,
            prompt_tokens=saved.prompt_tokens, completion_tokens=saved.completion_tokens,
            total_tokens=saved.prompt_tokens + saved.completion_tokens, cost_usd=float(saved.cost_usd),
        ),
    )
