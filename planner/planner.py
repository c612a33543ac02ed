"""Ask the LLM for a plan; repair it once; fall back to one step so a task is never lost."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from durable_orchestrator.llm.client import Completion, LLMClient
from planner.agents import AGENTS, DEFAULT_AGENT
from planner.models import Plan, PlanInvalid, response_format, single_step_plan, validate_plan

PLAN_MARKER = "Return the plan as JSON"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass
class PlanOutcome:
    plan: Plan
    fallback: bool
    errors: list[str] = field(default_factory=list)
    calls: list[Completion] = field(default_factory=list)


def system_prompt(max_steps: int) -> str:
    agents = "\n".join(f"- {a.name}: {a.description}" for a in AGENTS.values())
    return (
        "You are the planner of an agent orchestrator. Split the user's task into at most "
        f"{max_steps} steps, each assigned to exactly one of these agents:\n{agents}\n"
        "Each step has a short title, the agent, concrete instructions, and depends_on: the "
        "0-based indices of earlier steps whose outputs it needs (steps without a dependency "
        "between them run in parallel). Use as few steps as the task needs.\n"
        f'{PLAN_MARKER}: {{"steps": [{{"title", "agent", "instructions", "depends_on"}}]}}.'
    )


def user_prompt(description: str, memories: list[str]) -> str:
    parts = [f"Task:\n{description}"]
    if memories:
        parts.append("Relevant results of earlier tasks:\n" + "\n".join(f"- {m}" for m in memories))
    return "\n\n".join(parts)


def parse_plan_text(text: str | None) -> Any:
    """JSON from a response_format answer, a ```json fence, or the outermost {...}."""
    if not text:
        raise PlanInvalid(["plan: the response was empty"])
    candidates = [text, *_FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise PlanInvalid(["plan: the response is not valid JSON"])


def fallback_plan(description: str) -> Plan:
    return single_step_plan(description, DEFAULT_AGENT)


async def make_plan(
    llm: LLMClient,
    *,
    model: str,
    description: str,
    memories: list[str] | None = None,
    max_steps: int = 8,
    max_tokens: int | None = None,
) -> PlanOutcome:
    """Provider errors propagate (Temporal retries them); only a bad *plan* degrades. Each of
    the (at most two) calls is metered by `llm` (the activity's MeteredLLM: budgets, ledger)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(max_steps)},
        {"role": "user", "content": user_prompt(description, memories or [])},
    ]
    calls: list[Completion] = []
    errors: list[str] = []
    for attempt in range(2):
        completion = await llm.complete(
            model=model,
            messages=messages,
            response_format=response_format(max_steps),
            max_tokens=max_tokens,
        )
        calls.append(completion)
        try:
            plan = validate_plan(parse_plan_text(completion.content), max_steps=max_steps)
            return PlanOutcome(plan=plan, fallback=False, errors=errors, calls=calls)
        except PlanInvalid as exc:
            errors.extend(f"attempt {attempt + 1}: {e}" for e in exc.errors)
            messages += [
                {"role": "assistant", "content": (completion.content or "")[:4000]},
                {
                    "role": "user",
                    "content": "That plan is invalid:\n"
                    + "\n".join(f"- {e}" for e in exc.errors)
                    + "\nFix every problem and answer with the corrected plan only.",
                },
            ]
    return PlanOutcome(plan=fallback_plan(description), fallback=True, errors=errors, calls=calls)
