"""The raw Temporal SDK baseline: a minimal workflow of 3 sequential activities.

Only temporalio and the standard library here (it runs in the workflow sandbox); the activity
lives in `raw_worker.py` and is referenced by name."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

RAW_WORKFLOW = "RawThreeSteps"
RAW_ACTIVITY = "raw_llm_call"
STEPS = 3


@workflow.defn(name=RAW_WORKFLOW)
class RawThreeSteps:
    @workflow.run
    async def run(self, prompt: str) -> str:
        text = prompt
        for _ in range(STEPS):
            text = await workflow.execute_activity(
                RAW_ACTIVITY,
                text,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        return text


# --- shape experiments (benchmarks.profile --shapes) ------------------------------------------
# The product runs plan + 3 steps + finish = 5 activities. These variants of the raw baseline
# measure what each server round trip costs, without touching the product's workflow.

RAW_FIVE = "RawPlanStepsFinish"
RAW_LOCAL_FINISH = "RawPlanStepsLocalFinish"
RAW_NOOP_ACTIVITY = "raw_noop"


@workflow.defn(name=RAW_FIVE)
class RawPlanStepsFinish:
    """plan (LLM) + 3 steps (LLM) + finish (no LLM) as 5 regular activities: the product's shape."""

    @workflow.run
    async def run(self, prompt: str) -> str:
        opts = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_attempts=3)}
        text = await workflow.execute_activity(RAW_ACTIVITY, prompt, result_type=str, **opts)  # type: ignore[arg-type]
        for _ in range(STEPS):
            text = await workflow.execute_activity(RAW_ACTIVITY, text, result_type=str, **opts)  # type: ignore[arg-type]
        return await workflow.execute_activity(RAW_NOOP_ACTIVITY, text, result_type=str, **opts)  # type: ignore[arg-type]


@workflow.defn(name=RAW_LOCAL_FINISH)
class RawPlanStepsLocalFinish:
    """The same, with finish as a local activity."""

    @workflow.run
    async def run(self, prompt: str) -> str:
        opts = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_attempts=3)}
        text = await workflow.execute_activity(RAW_ACTIVITY, prompt, result_type=str, **opts)  # type: ignore[arg-type]
        for _ in range(STEPS):
            text = await workflow.execute_activity(RAW_ACTIVITY, text, result_type=str, **opts)  # type: ignore[arg-type]
        return await workflow.execute_local_activity(RAW_NOOP_ACTIVITY, text, result_type=str, **opts)  # type: ignore[arg-type]
