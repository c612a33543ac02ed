"""The shape of a plan, and its validation (agents known, references valid, no cycles)."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.agents import AGENTS


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    agent: str
    instructions: str = Field(min_length=1, max_length=4000)
    depends_on: list[int] = Field(default_factory=list)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(min_length=1)


class PlanInvalid(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def plan_json_schema(max_steps: int) -> dict[str, Any]:
    """Strict JSON schema for `response_format`, agent names as an enum."""
    step = {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "agent", "instructions", "depends_on"],
        "properties": {
            "title": {"type": "string", "description": "Short name of the step."},
            "agent": {"type": "string", "enum": list(AGENTS)},
            "instructions": {"type": "string", "description": "What the agent must do."},
            "depends_on": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "0-based indices of the steps whose outputs this step needs.",
            },
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["steps"],
        "properties": {"steps": {"type": "array", "items": step, "maxItems": max_steps}},
    }


def response_format(max_steps: int) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "plan", "strict": True, "schema": plan_json_schema(max_steps)},
    }


def validate_plan(data: Any, *, max_steps: int) -> Plan:
    """Parse and check a plan; raise PlanInvalid with every problem found, worded for the LLM."""
    if isinstance(data, list):
        data = {"steps": data}
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanInvalid(
            [f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors()]
        ) from None
    errors: list[str] = []
    n = len(plan.steps)
    if n > max_steps:
        errors.append(f"steps: at most {max_steps} steps allowed, got {n}")
    for i, step in enumerate(plan.steps):
        if step.agent not in AGENTS:
            errors.append(
                f"steps.{i}.agent: unknown agent {step.agent!r}; use one of {', '.join(AGENTS)}"
            )
        for dep in step.depends_on:
            if not 0 <= dep < n:
                errors.append(f"steps.{i}.depends_on: step {dep} does not exist")
            elif dep == i:
                errors.append(f"steps.{i}.depends_on: a step cannot depend on itself")
    if not errors:
        try:
            TopologicalSorter({i: set(s.depends_on) for i, s in enumerate(plan.steps)}).prepare()
        except CycleError as exc:
            errors.append(f"steps: dependency cycle between steps {exc.args[1]}")
    if errors:
        raise PlanInvalid(errors)
    return plan


def single_step_plan(description: str, agent: str, title: str = "Complete the task") -> Plan:
    """The whole task as one step for `agent` (its instructions are the description, cut to
    the step's limit; the step's prompt carries the whole description anyway)."""
    return Plan(
        steps=[PlanStep(title=title, agent=agent, instructions=description[:4000], depends_on=[])]
    )


def downstream(depends_on: list[list[int]], roots: set[int]) -> set[int]:
    """`roots` and every step that depends on one of them, directly or through others
    (`depends_on[i]`: the steps step i needs)."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for i, deps in enumerate(depends_on):
            if i not in found and found.intersection(deps):
                found.add(i)
                changed = True
    return found
