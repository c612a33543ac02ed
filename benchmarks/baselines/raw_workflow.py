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
