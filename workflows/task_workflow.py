"""TaskWorkflow: plan → run the plan's steps as a DAG → finish.

Deterministic and small: it decides what runs next and passes ids; the activities do all I/O
and write every status change to Postgres themselves.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from core.contracts import (
        TASK_WORKFLOW,
        ExecutionPolicy,
        FinishInput,
        PlanInput,
        PlannedStep,
        PlanResult,
        RememberInput,
        StepInput,
        StepResult,
        TaskInput,
        TaskOutcome,
    )

BOOKKEEPING_TIMEOUT = timedelta(seconds=30)


class StepFailed(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def failure_message(err: BaseException) -> str:
    """The innermost cause's message: what the provider or the tool actually said."""
    while getattr(err, "cause", None) is not None:
        err = err.cause  # type: ignore[assignment]
    return str(err) or type(err).__name__


def retry_policy(p: ExecutionPolicy) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=p.initial_interval_secs),
        backoff_coefficient=p.backoff,
        maximum_interval=timedelta(seconds=p.max_interval_secs),
        maximum_attempts=p.max_attempts,
    )


@workflow.defn(name=TASK_WORKFLOW)
class TaskWorkflow:
    def __init__(self) -> None:
        self._done: dict[int, StepResult] = {}

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskOutcome:
        p = inp.policy
        try:
            await asyncio.wait_for(self._execute(inp), timeout=p.deadline_secs)
        except asyncio.TimeoutError:
            return await self._finish(
                inp, "failed", f"deadline exceeded: the task did not finish within {p.deadline_secs:g}s"
            )
        except StepFailed as err:
            return await self._finish(inp, "failed", str(err), failed_step=err.index)
        except ActivityError as err:
            return await self._finish(inp, "failed", failure_message(err))
        except (asyncio.CancelledError, CancelledError):
            # Cancellation requested (API or `temporal workflow cancel`): record it, then
            # let the workflow end as cancelled.
            await self._finish(inp, "cancelled", "cancelled by request")
            raise
        outcome = await self._finish(inp, "completed")
        if workflow.patched("remember-result"):
            await self._remember(inp)
        return outcome

    async def _remember(self, inp: TaskInput) -> None:
        """Write the completed task's result to long-term memory. The task has already
        completed: a memory that cannot be written is logged, never a task failure."""
        try:
            await workflow.execute_activity(
                "remember_result",
                RememberInput(task_id=inp.task_id),
                result_type=int,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=5),
                summary="remember result",
            )
        except ActivityError as err:
            workflow.logger.warning("remember_result failed: %s", failure_message(err))

    async def _execute(self, inp: TaskInput) -> None:
        p = inp.policy
        workflow.set_current_details("planning")
        plan: PlanResult = await workflow.execute_activity(
            "plan_task",
            PlanInput(task_id=inp.task_id),
            result_type=PlanResult,
            start_to_close_timeout=timedelta(seconds=p.step_timeout_secs),
            heartbeat_timeout=timedelta(seconds=max(5.0, p.step_timeout_secs / 4)),
            retry_policy=retry_policy(p),
            summary="plan",
        )
        await self._run_dag(inp, plan.steps)

    async def _run_dag(self, inp: TaskInput, steps: list[PlannedStep]) -> None:
        pending = {s.index: s for s in steps}
        running: dict[asyncio.Task[StepResult], int] = {}
        try:
            while pending or running:
                ready = [
                    i for i in sorted(pending) if all(d in self._done for d in pending[i].depends_on)
                ]
                for i in ready[: max(1, inp.policy.max_parallel_steps) - len(running)]:
                    step = pending.pop(i)
                    running[asyncio.ensure_future(self._run_step(inp, step))] = i
                if not running:
                    raise ApplicationError("plan has unreachable steps", non_retryable=True)
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f]):
                    index = running.pop(fut)
                    try:
                        self._done[index] = fut.result()
                    except ActivityError as err:
                        raise StepFailed(index, failure_message(err)) from err
                workflow.set_current_details(
                    f"{len(self._done)}/{len(steps)} steps done"
                )
        finally:
            for fut in running:
                fut.cancel()

    async def _run_step(self, inp: TaskInput, step: PlannedStep) -> StepResult:
        p = inp.policy
        workflow.set_current_details(f"step {step.index} · {step.agent}: {step.title[:80]}")
        return await workflow.execute_activity(
            "run_step",
            StepInput(task_id=inp.task_id, index=step.index, agent=step.agent, depends_on=step.depends_on),
            result_type=StepResult,
            start_to_close_timeout=timedelta(seconds=p.step_timeout_secs),
            heartbeat_timeout=timedelta(seconds=max(5.0, p.step_timeout_secs / 4)),
            retry_policy=retry_policy(p),
            summary=f"step {step.index} · {step.agent}",
        )

    async def _finish(
        self, inp: TaskInput, status: str, error: str | None = None, failed_step: int | None = None
    ) -> TaskOutcome:
        preview = await workflow.execute_activity(
            "finish_task",
            FinishInput(task_id=inp.task_id, status=status, error=error, failed_step=failed_step),
            result_type=str,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            summary=f"finish · {status}",
        )
        if status == "failed":
            raise ApplicationError(error or "task failed", type="TaskFailed", non_retryable=True)
        return TaskOutcome(task_id=inp.task_id, status=status, result_preview=preview)
