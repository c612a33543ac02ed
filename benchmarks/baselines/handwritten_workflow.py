"""The hand-written baseline: what a competent engineer writes on the raw Temporal SDK for the
product's job. One plan activity, then one activity per step; each activity makes one chat
completion (openai SDK) and writes its row (output, tokens) and the task's status to
PostgreSQL with asyncpg. No memory, no budgets, no events.

Only temporalio and the standard library here (it runs in the workflow sandbox); the
activities live in `handwritten_worker.py` and are referenced by name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

HANDWRITTEN_WORKFLOW = "HandWrittenTask"
PLAN_ACTIVITY = "hw_plan"
STEP_ACTIVITY = "hw_step"


@dataclass
class PlanInput:
    task_id: str
    prompt: str


@dataclass
class StepInput:
    task_id: str
    index: int
    instructions: str
    previous: str
    last: bool


_OPTS = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(maximum_attempts=3),
}


@workflow.defn(name=HANDWRITTEN_WORKFLOW)
class HandWrittenTask:
    @workflow.run
    async def run(self, task: PlanInput) -> str:
        steps = await workflow.execute_activity(PLAN_ACTIVITY, task, result_type=list[str], **_OPTS)  # type: ignore[arg-type]
        text = ""
        for i, instructions in enumerate(steps):
            text = await workflow.execute_activity(
                STEP_ACTIVITY,
                StepInput(task.task_id, i, instructions, text, last=i == len(steps) - 1),
                result_type=str,
                **_OPTS,  # type: ignore[arg-type]
            )
        return text
