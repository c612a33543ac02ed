"""Request and response models of the tasks API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    computed_field,
    field_validator,
)
from sqlmodel import Field as ModelField

from durable_orchestrator.data.tables import StepBase, TaskBase, TaskOutcomeBase, TaskStatus
from planner.agents import AGENTS
from planner.models import PlanStep

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


# The same rules as JSON Schema, so the OpenAPI document admits exactly what the API stores:
# no NUL anywhere, at most MAX_METADATA_DEPTH levels of objects and arrays (the byte bound,
# MAX_METADATA_BYTES, is stated in the description: JSON Schema cannot count bytes).
_NO_NUL = "^[^\\u0000]*$"


def _json_value(levels: int) -> dict[str, Any]:
    scalars: list[dict[str, Any]] = [
        {"type": "string", "pattern": _NO_NUL}, {"type": "number"}, {"type": "boolean"},
        {"type": "null"},
    ]
    if levels > 0:
        scalars += [_json_object(levels), {"type": "array", "items": _json_value(levels - 1)}]
    return {"anyOf": scalars}


def _json_object(levels: int) -> dict[str, Any]:
    return {
        "type": "object",
        "propertyNames": {"pattern": _NO_NUL},
        "additionalProperties": _json_value(levels - 1),
    }


def metadata_schema(schema: dict[str, Any]) -> None:
    """json_schema_extra of every metadata field: replaces pydantic's free-form object."""
    description = schema.get("description")
    schema.clear()
    schema.update(_json_object(MAX_METADATA_DEPTH))
    schema["description"] = (
        f"{description + ' ' if description else ''}At most {MAX_METADATA_DEPTH} levels deep "
        f"and {MAX_METADATA_BYTES} bytes as JSON; no NUL characters."
    )


def optional_metadata_schema(schema: dict[str, Any]) -> None:
    """The same, for a field that may also be null."""
    metadata_schema(schema)
    description = schema.pop("description")
    obj = dict(schema)
    schema.clear()
    schema.update({"anyOf": [obj, {"type": "null"}], "description": description})


# A description: some character that is not whitespace, and no NUL.
DESCRIPTION_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


class BudgetIn(BaseModel):
    """Caps for one task. Omitted (or null) fields take ORCH_DEFAULT_TASK_MAX_TOKENS /
    ORCH_DEFAULT_TASK_MAX_COST_USD; a value above those operator caps is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, gt=0, description="Prompt + completion tokens, all calls.")
    max_cost_usd: float | None = Field(
        None, gt=0, description="USD, priced by genai-prices and ORCH_PRICES_FILE; a model "
        "without a known price is then refused before its call.",
    )


class TaskCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"description": "Compare the three largest cloud providers' GPU pricing",
                 "metadata": {"project": "q3-report"}},
                {"description": "Summarise this week's incident reports",
                 "webhook_url": "https://hooks.example.com/orchestrator"},
                {"description": "Proofread the attached release notes", "agent": "reviewer"},
                {"description": "Price comparison of two laptops",
                 "plan": [
                     {"title": "Gather prices", "agent": "researcher",
                      "instructions": "Find current prices of both models"},
                     {"title": "Compare", "agent": "analyst",
                      "instructions": "Compare price per performance", "depends_on": [0]},
                 ]},
            ],
            "not": {"required": ["agent", "plan"]},
        },
    )

    user_id: str | None = Field(
        None, max_length=200, description="Optional; must equal the caller's user when given."
    )
    description: str = Field(
        min_length=1, max_length=100_000, description="What to do.",
        json_schema_extra={"pattern": DESCRIPTION_PATTERN},
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form JSON object.", json_schema_extra=metadata_schema
    )
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
    # Not nullable (null is refused, as the schema says): None only means "not given".
    agent: str = Field(  # type: ignore[assignment]
        None,
        max_length=100,
        description="Run the task as one step for this agent (see GET /agents), without a "
        "planning call. Not together with `plan`.",
        json_schema_extra={"enum": list(AGENTS)},
    )
    plan: list[PlanStep] = Field(  # type: ignore[assignment]
        None,
        min_length=1,
        description="The steps to run, without a planning call; checked like a planner's plan "
        "(known agents, `depends_on` naming other steps by 0-based index, no cycles, at most "
        "ORCH_MAX_PLAN_STEPS steps). Not together with `agent`.",
    )

    @field_validator("description")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("description must not be blank")
        return v

    @field_validator("description", "user_id", "webhook_url", "metadata", "agent")
    @classmethod
    def _storable_text(cls, v: Any, info: Any) -> Any:
        _storable(v, info.field_name)
        return v

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(v)

    @field_validator("plan")
    @classmethod
    def _storable_plan(cls, v: list[PlanStep] | None) -> list[PlanStep] | None:
        _storable([s.model_dump() for s in v or []], "plan")
        return v


def _rerun_variants(schema: dict[str, Any]) -> None:
    """What the checks in api/routes/reruns.py accept, said in the schema: `from_step` (with
    optional edits), or `replan: true` without `from_step`, `instructions` and `agents`."""
    schema["examples"] = [
        {"from_step": 2},
        {"from_step": 1, "instructions": {"1": "Use only 2026 prices"}, "model": "gpt-4o"},
        {"from_step": 3, "agents": {"3": "reviewer"}},
        {"replan": True},
    ]
    schema["oneOf"] = [
        {"required": ["from_step"], "properties": {"replan": {"const": False}}},
        {
            "required": ["replan"],
            "properties": {"replan": {"const": True}},
            "not": {"anyOf": [{"required": [f]} for f in ("from_step", "instructions", "agents")]},
        },
    ]


class RerunRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_rerun_variants,
    )

    # Not nullable (an explicit null is refused, as the schema says): the None defaults only
    # mean "not given".
    from_step: StrictInt = Field(  # type: ignore[assignment]
        None,
        ge=0,
        description="Index of the first step to run again (with everything downstream of it).",
    )
    instructions: dict[str, str] = Field(  # type: ignore[assignment]
        None,
        description='New instructions by step index (`{"1": "..."}`); an edited step runs again.',
        json_schema_extra={
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "string", "pattern": DESCRIPTION_PATTERN},
        },
    )
    agents: dict[str, str] = Field(  # type: ignore[assignment]
        None,
        description='Another agent by step index (`{"3": "reviewer"}`); such a step runs again.',
        json_schema_extra={
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "string", "enum": list(AGENTS)},
        },
    )
    model: str = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=200, description="The model of the steps that run again.",
        json_schema_extra={"pattern": DESCRIPTION_PATTERN},
    )
    replan: StrictBool = Field(
        False,
        description="Plan again from the same description (nothing reused); not with from_step, "
        "instructions or agents.",
    )

    @field_validator("instructions", "agents", "model")
    @classmethod
    def _storable_text(cls, v: Any, info: Any) -> Any:
        _storable(v, info.field_name)
        return v

    @field_validator("model")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("model must not be blank")
        return v


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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reused(self) -> bool:
        """The output was recorded by an earlier task (`reused_from_task_id`, same index) and
        reused by this rerun: no LLM call, no cost here."""
        return self.reused_from_task_id is not None


class Progress(BaseModel):
    steps_done: int = Field(description="Steps completed.")
    steps_total: int = Field(description="Steps in the plan; 0 until the task has one.")


class TaskPublic(TaskOutcomeBase):
    steps: list[StepPublic]
    cost: Cost
    reruns: list[str] = ModelField(description="Ids of the tasks rerun from this one, oldest first.")
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> Progress:
        return Progress(
            steps_done=sum(1 for s in self.steps if s.status == "completed"),
            steps_total=len(self.steps),
        )


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
