"""How a step's prompt is put together from the task, the step and its inputs."""

from __future__ import annotations

from typing import Any

from durable_orchestrator.data.steps import StepContext
from planner.agents import Agent


def step_messages(
    agent: Agent, ctx: StepContext, *, max_input_chars: int, memory: str = ""
) -> list[dict[str, Any]]:
    parts = [f"Overall task:\n{ctx.description}", f"Your step: {ctx.title}\n{ctx.instructions}"]
    if ctx.dependencies:
        # Bound each input so a long upstream answer cannot crowd out the instructions.
        per_dep = max(200, max_input_chars // len(ctx.dependencies))
        for index, title, output in ctx.dependencies:
            text = output if len(output) <= per_dep else output[:per_dep] + " […truncated]"
            parts.append(f"Output of step {index} ({title}):\n{text}")
    if memory:
        parts.append(f"Task memory (notes and results of other steps, oldest first):\n{memory}")
    return [
        {"role": "system", "content": agent.system_prompt},
        {"role": "user", "content": "\n\n".join(parts)},
    ]
