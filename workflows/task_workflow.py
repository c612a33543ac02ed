"""TaskWorkflow: plan → run the plan's steps as a DAG → finish → remember.

Deterministic and small: it decides what runs next and passes ids; the activities do all I/O
and write every status change to Postgres themselves. One shape, no `workflow.patched()`, until
the first tagged release (docs/design.md, "Workflow versioning").
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from durable_orchestrator.temporal.contracts import (
        APPROVAL_UPDATE,
        FINISH_TASK,
        PLAN_TASK,
        REMEMBER_RESULT,
        RUN_STEP,
        RUN_TOOL,
        SEND_WEBHOOK,
        SLOT_GRANTED_SIGNAL,
        TAKE_SLOT,
        TASK_WORKFLOW,
        ApprovalDecision,
        FinishInput,
        PlanInput,
        PlannedStep,
        PlanResult,
        RememberInput,
        StepInput,
        StepResult,
        TaskInput,
        TaskOutcome,
        ToolCallRef,
        ToolInput,
        ToolResult,
        WebhookInput,
    )
    from durable_orchestrator.temporal.search_attributes import TASK_STATUS, USER_ID

from workflows.activity_options import (
    BOOKKEEPING_TIMEOUT,
    FINISH_RETRY,
    REMEMBER_RETRY,
    REMEMBER_TIMEOUT,
    WEBHOOK_RETRY,
    heartbeat_timeout,
    retry_policy,
    step_timeout,
    tool_retry,
    tool_timeout,
)
from workflows.approvals import Approvals


class StepFailed(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def failure_message(err: BaseException) -> str:
    """The innermost cause's message: what the provider or the tool actually said."""
    while getattr(err, "cause", None) is not None:
        err = err.cause  # type: ignore[assignment]
    if isinstance(err, ApplicationError) and err.type == "BudgetExceeded":
        return err.message  # already starts with "budget_exceeded: ", as clients expect
    return str(err) or type(err).__name__


@workflow.defn(name=TASK_WORKFLOW)
class TaskWorkflow:
    def __init__(self) -> None:
        self._done: dict[int, StepResult] = {}
        self._approvals = Approvals()
        self._slot_granted = False

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self) -> None:
        self._slot_granted = True

    # POST /tasks/{id}/approvals/{approval_id} (api/routes/approvals.py) sends this update.
    @workflow.update(name=APPROVAL_UPDATE)
    async def decide_approval(self, decision: ApprovalDecision) -> str:
        self._approvals.record(decision)
        return decision.decision

    @decide_approval.validator
    def _validate_approval(self, decision: ApprovalDecision) -> None:
        self._approvals.validate(decision)

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskOutcome:
        p = inp.policy
        self._set_status(inp, "running", user=True)
        if inp.bounded:
            try:
                await self._take_slot(inp)
            except (asyncio.CancelledError, CancelledError):
                await self._finish(inp, "cancelled", "cancelled by request")
                raise
        try:
            await asyncio.wait_for(self._execute(inp), timeout=p.deadline_secs)
        except TimeoutError:
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
        await self._remember(inp)
        return outcome

    async def _take_slot(self, inp: TaskInput) -> None:
        """Wait, durably and without polling, for one of the user's running slots: the task
        that frees one signals the oldest waiting task. Time in the queue is not part of the
        task's deadline."""
        admitted = await workflow.execute_local_activity(
            TAKE_SLOT, inp.task_id, result_type=bool, start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=FINISH_RETRY, summary="take a running slot",
        )
        if admitted:
            return
        self._set_status(inp, "queued")
        workflow.set_current_details("queued: the user's running tasks are at their bound")
        await workflow.wait_condition(lambda: self._slot_granted)
        self._set_status(inp, "running")

    async def _execute(self, inp: TaskInput) -> None:
        p = inp.policy
        workflow.set_current_details("planning")
        plan: PlanResult = await workflow.execute_activity(
            PLAN_TASK,
            PlanInput(task_id=inp.task_id),
            result_type=PlanResult,
            start_to_close_timeout=step_timeout(p),
            heartbeat_timeout=heartbeat_timeout(p),
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
                workflow.set_current_details(f"{len(self._done)}/{len(steps)} steps done")
        finally:
            for fut in running:
                fut.cancel()

    async def _run_step(self, inp: TaskInput, step: PlannedStep) -> StepResult:
        """The tool-calling loop: one run_step activity per LLM turn; each requested tool
        call runs as its own activity; the conversation itself stays in Postgres."""
        p = inp.policy
        workflow.set_current_details(f"step {step.index} · {step.agent}: {step.title[:80]}")
        turn = 0
        while True:
            result = await workflow.execute_activity(
                RUN_STEP,
                StepInput(
                    task_id=inp.task_id, index=step.index, agent=step.agent,
                    depends_on=step.depends_on, turn=turn, max_turns=p.max_turns,
                ),
                result_type=StepResult,
                start_to_close_timeout=step_timeout(p),
                heartbeat_timeout=heartbeat_timeout(p),
                retry_policy=retry_policy(p),
                summary=f"step {step.index} · {step.agent}" + (f" · turn {turn}" if turn else ""),
            )
            if result.done:
                return result
            if result.tool_calls:
                await asyncio.gather(*(self._run_tool(inp, step, turn, c) for c in result.tool_calls))
            turn += 1

    async def _run_tool(self, inp: TaskInput, step: PlannedStep, turn: int, call: ToolCallRef) -> ToolResult:
        tool_input = ToolInput(task_id=inp.task_id, index=step.index, turn=turn, seq=call.seq)
        if call.approval_id:
            self._set_status(inp, "waiting_approval")
            workflow.set_current_details(f"step {step.index} waiting for approval of {call.tool}")
            try:
                d = await self._approvals.wait(call.approval_id, inp.policy.approval_timeout_secs)
            finally:
                self._set_status(inp, "running")
            tool_input.decision, tool_input.comment, tool_input.decided_by = d.decision, d.comment, d.user_id
        return await workflow.execute_activity(
            RUN_TOOL,
            tool_input,
            result_type=ToolResult,
            start_to_close_timeout=tool_timeout(call),
            retry_policy=tool_retry(inp.policy),
            summary=f"tool {call.tool}",
        )

    def _set_status(self, inp: TaskInput, status: str, *, user: bool = False) -> None:
        """TaskStatus (and UserId) search attributes for the Web UI / `temporal workflow list`."""
        if not inp.search_attributes:
            return
        updates = [TASK_STATUS.value_set(status)]
        if user:
            updates.append(USER_ID.value_set(inp.user_id))
        workflow.upsert_search_attributes(updates)

    async def _finish(
        self, inp: TaskInput, status: str, error: str | None = None, failed_step: int | None = None
    ) -> TaskOutcome:
        """Record the end in Postgres, tell the webhook, and end the workflow the same way."""
        self._set_status(inp, status)
        # Bookkeeping runs as local activities: one Postgres transaction each, no round trip
        # through the Temporal server's task queue.
        preview = await workflow.execute_local_activity(
            FINISH_TASK,
            FinishInput(
                task_id=inp.task_id, status=status, error=error, failed_step=failed_step,
                free_slot_of=inp.user_id if inp.bounded else None,
            ),
            result_type=str,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=FINISH_RETRY,
            summary=f"finish · {status}",
        )
        if inp.webhook:
            await self._send_webhook(inp)
        if status == "failed":
            raise ApplicationError(error or "task failed", type="TaskFailed", non_retryable=True)
        return TaskOutcome(task_id=inp.task_id, status=status, result_preview=preview)

    async def _remember(self, inp: TaskInput) -> None:
        """Write the completed task's result to long-term memory. The task has already
        completed: a memory that cannot be written is logged, never a task failure."""
        try:
            await workflow.execute_local_activity(
                REMEMBER_RESULT,
                RememberInput(task_id=inp.task_id),
                result_type=int,
                start_to_close_timeout=REMEMBER_TIMEOUT,
                retry_policy=REMEMBER_RETRY,
                summary="remember result",
            )
        except ActivityError as err:
            workflow.logger.warning("remember_result failed: %s", failure_message(err))

    async def _send_webhook(self, inp: TaskInput) -> None:
        """Tell the task's webhook it ended. Non-2xx answers are retried by Temporal; a hook
        that never accepts it does not change the task's outcome."""
        try:
            await workflow.execute_activity(
                SEND_WEBHOOK,
                WebhookInput(task_id=inp.task_id),
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=WEBHOOK_RETRY,
                summary="webhook",
            )
        except ActivityError as err:
            workflow.logger.warning("webhook gave up: %s", failure_message(err))
