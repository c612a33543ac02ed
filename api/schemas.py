"""Request and response models of the tasks API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Field as ModelField

from durable_orchestrator.data.tables import StepBase, TaskBase, TaskOutcomeBase, TaskStatus

MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 5


def _storable(value: Any, where: str = "value") -> None:
    """PostgreSQL text and jsonb cannot hold NUL characters or unpaired surrogates; refuse
    them as bad input instead of failing at INSERT time."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where} must be valid Unicode (unpaired surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k, where)
            _storable(v, where)
    elif isinstance(value, list):
        for v in value:
            _storable(v, where)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_metadata(v: dict[str, Any]) -> dict[str, Any]:
    """Storable, and bounded in size and depth: the rules every metadata object follows."""
    _storable(v, "metadata")
    if len(json.dumps(v)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata must serialise to at most {MAX_METADATA_BYTES} bytes")
    if _depth(v) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata must be nested at most {MAX_METADATA_DEPTH} levels deep")
    return v


class BudgetIn(BaseModel):
    """Caps for one task; omitted fields take ORCH_DEFAULT_TASK_MAX_TOKENS / _COST_USD."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, gt=0, description="Prompt + completion tokens, all calls.")
    max_cost_usd: float | None = Field(None, gt=0, description="USD, from the price table.")


class TaskCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"description": "Compare the three largest cloud providers' GPU pricing",
                 "metadata": {"project": "q3-report"}},
                {"description": "Summarise this week's incident reports",
                 "webhook_url": "https://hooks.example.com/orchestrator"},
            ]
        },
    )

    user_id: str | None = Field(
        None, max_length=200, description="Optional; must equal the caller's user when given."
    )
    description: str = Field(min_length=1, max_length=100_000, description="What to do.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON object.")
    budget: BudgetIn | None = Field(None, description="Token and cost caps for this task.")
    priority: Literal["high", "normal", "low"] = Field(
        "normal",
        description="Temporal task priority of every workflow and activity task of this task "
        "(high runs before normal before low when workers are busy).",
    )
    webhook_url: str | None = Field(
        None,
        max_length=2000,
        description="Optional http(s) URL POSTed (HMAC-SHA256 signed) when the task ends; its "
        "host must be in ORCH_WEBHOOK_ALLOWED_HOSTS.",
    )

    @field_validator("description")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("description must not be blank")
        return v

    @field_validator("description", "user_id", "webhook_url", "metadata")
    @classmethod
    def _storable_text(cls, v: Any, info: Any) -> Any:
        _storable(v, info.field_name)
        return v

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(v)


class TaskAccepted(BaseModel):
    id: str
    status: TaskStatus
    workflow_id: str
    status_url: str


class Cost(BaseModel):
    usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int | None = None


class ToolCallPublic(BaseModel):
    turn: int
    seq: int
    call_id: str
    tool: str
    arguments: str
    status: str  # validated | rejected | awaiting_approval | succeeded | failed
    result: str | None
    error: str | None
    latency_ms: int | None
    approval_id: str | None = None
    decision: str | None = None
    decision_comment: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


# The views of tasks and steps share their fields with the table models (data/tables.py);
# `meta` is the `metadata` column, and says `metadata` in the API.


class StepPublic(StepBase):
    cost: Cost
    tool_calls: list[ToolCallPublic] = ModelField(default_factory=list)


class TaskPublic(TaskOutcomeBase):
    steps: list[StepPublic]
    cost: Cost
    created_at: datetime
    updated_at: datetime


class TaskSummary(TaskBase):
    """One row of GET /tasks."""

    description: str = ModelField(description="The first 200 characters.")
    created_at: datetime
    updated_at: datetime


class TaskList(BaseModel):
    items: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class TokenRevoke(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"jti": "0b6f1c9e-4e1a-4d55-9a43-5d0a7c1f2e11", "reason": "laptop lost"}]},
    )

    jti: str = Field(min_length=1, max_length=200, description="The token's `jti` claim.")
    reason: str | None = Field(None, max_length=500)

    @field_validator("jti", "reason")
    @classmethod
    def _storable_text(cls, v: Any, info: Any) -> Any:
        _storable(v, info.field_name)
        return v


class TokenRevoked(BaseModel):
    jti: str
    revoked: bool = Field(description="False when it was already revoked.")
