"""Plan answers, built from the planner's own models so they are valid by construction.

A plan request is what `planner.planner.make_plan` sends: `response_format` of type json_schema
named "plan" (the openai SDK's `.parse(response_format=Plan)` names it "Plan"). The answer is a
linear plan of up to three steps over the registry's agents, in registry order, bounded by the
schema's `maxItems`. An invalid plan only ever comes from a test's script.
"""

from __future__ import annotations

from typing import Any

from planner.agents import AGENTS
from planner.models import Plan, PlanStep

PHASES = ("Research", "Analyse", "Summarise")
#: Instructions quote at most this much of the request, so a long task stays a short plan.
GOAL_CHARS = 200


def _json_schema_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    return spec if isinstance(spec, dict) else None


def is_plan_request(body: dict[str, Any]) -> bool:
    spec = _json_schema_spec(body)
    return spec is not None and str(spec.get("name", "")).lower() == "plan"


def max_steps(body: dict[str, Any]) -> int | None:
    """The schema's `steps.maxItems` (the planner's max_plan_steps), when it has one."""
    spec = _json_schema_spec(body) or {}
    schema = spec.get("schema")
    steps = (
        ((schema or {}).get("properties") or {}).get("steps") if isinstance(schema, dict) else None
    )
    limit = steps.get("maxItems") if isinstance(steps, dict) else None
    return limit if isinstance(limit, int) and limit >= 1 else None


def build_plan(goal: str, *, steps: int = len(PHASES)) -> Plan:
    """`steps` steps, step i depending on step i - 1, agents taken from the registry in turn."""
    agents = list(AGENTS)
    goal = goal[:GOAL_CHARS]
    return Plan(
        steps=[
            PlanStep(
                title=f"Step {i + 1}: {PHASES[i % len(PHASES)]}",
                agent=agents[i % len(agents)],
                instructions=f"{PHASES[i % len(PHASES)]} for this request: {goal}",
                depends_on=[i - 1] if i else [],
            )
            for i in range(max(1, steps))
        ]
    )


def plan_for(body: dict[str, Any], goal: str) -> Plan:
    limit = max_steps(body)
    return build_plan(goal, steps=len(PHASES) if limit is None else min(len(PHASES), limit))
