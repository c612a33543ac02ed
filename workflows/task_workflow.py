"""TaskWorkflow: plan → run the plan's steps as a DAG → finish.

Deterministic and small: it decides what runs next and passes ids; the activities do all I/O
and write every status change to Postgres themselves. One shape, no `workflow.patched()`, until
the first tagged release (docs/design.md, "Workflow versioning").
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from durable_orchestrator.temporal.contracts import (
        APPROVAL_UPDATE,
        FINISH_TASK,
        PLAN_TASK,
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
        Resume,
        StepInput,
        StepProgress,
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
    WEBHOOK_RETRY,
    heartbeat_timeout,
    plan_timeout,
    retry_policy,
    step_timeout,
    tool_heartbeat_timeout,
    tool_retry,
    tool_timeout,
)
from workflows.approvals import Approvals


class StepFailed(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class HandOver(Exception):
    """Every running step stopped at a turn boundary: the run continues as new."""


async def _stop(*futures: asyncio.Future) -> None:  # type: ignore[type-arg]
    """Cancel `futures` (their running activities get cancel requests) and let them unwind.
    What they end with is an activity's cancellation error: the caller decides the outcome."""
    if not futures:
        return
    for fut in futures:
        fut.cancel()
    await workflow.wait(list(futures))
    for fut in futures:
        if not fut.cancelled():
            fut.exception()  # retrieved, so no "exception was never retrieved" error log


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
        self._steps: list[PlannedStep] = []
        self._paused: dict[int, int] = {}  # step index -> turn it goes on at after the hand-over
        self._handing_over = False
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
        if inp.bounded and inp.resume is None:  # a continued run keeps the slot of the first
            try:
                await self._take_slot(inp)
            except (asyncio.CancelledError, CancelledError):
                await self._finish(inp, "cancelled", "cancelled by request")
                raise
        # After the slot: time spent queued is not part of the deadline.
        started_at = inp.resume.started_at if inp.resume else workflow.now().timestamp()
        deadline = f"deadline exceeded: the task did not finish within {p.deadline_secs:g}s"
        remaining = p.deadline_secs - (workflow.now().timestamp() - started_at)
        if remaining <= 0:  # a continued run that starts past the first run's deadline
            return await self._finish(inp, "failed", deadline)
        # Its own task rather than asyncio.wait_for: from Python 3.12 on, wait_for awaits the
        # coroutine inside this task, so a cancel arriving during an activity surfaces as that
        # activity's ActivityError and the task would be recorded failed instead of cancelled.
        # Here the cancel always lands on this await, whatever the Python version.
        execution = asyncio.ensure_future(self._execute(inp))
        try:
            done, _ = await workflow.wait([execution], timeout=remaining)
        except asyncio.CancelledError:
            # Cancellation requested (API or `temporal workflow cancel`): stop the work,
            # record it, then let the workflow end as cancelled.
            await _stop(execution)
            await self._finish(inp, "cancelled", "cancelled by request")
            raise
        if not done:
            await _stop(execution)
            return await self._finish(inp, "failed", deadline)
        try:
            execution.result()
        except HandOver:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(replace(inp, resume=self._resume(inp, started_at)))
        except StepFailed as err:
            return await self._finish(inp, "failed", str(err), failed_step=err.index)
        except ActivityError as err:
            return await self._finish(inp, "failed", failure_message(err))
        # finish_task also queues the result for long-term memory, in the same transaction.
        return await self._finish(inp, "completed")

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
        if inp.resume:  # continued as new: the plan and the finished steps come with the input
            self._steps = inp.resume.steps
            self._done = {r.index: r for r in inp.resume.done}
            await self._run_dag(inp, {s.index: s.turn for s in inp.resume.in_progress})
            return
        workflow.set_current_details("planning")
        plan: PlanResult = await workflow.execute_activity(
            PLAN_TASK,
            PlanInput(task_id=inp.task_id),
            result_type=PlanResult,
            start_to_close_timeout=plan_timeout(p),
            heartbeat_timeout=heartbeat_timeout(p),
            retry_policy=retry_policy(p),
            summary="plan",
        )
        self._steps = plan.steps
        await self._run_dag(inp, {})

    async def _run_dag(self, inp: TaskInput, resume_at: dict[int, int]) -> None:
        steps = self._steps
        pending = {s.index: s for s in steps if s.index not in self._done}
        running: dict[asyncio.Task[StepResult | None], int] = {}
        try:
            while pending or running:
                ready = [
                    i for i in sorted(pending) if all(d in self._done for d in pending[i].depends_on)
                ]
                if self._handing_over:  # no step starts; the running ones stop at their next turn
                    ready = []
                for i in ready[: max(1, inp.policy.max_parallel_steps) - len(running)]:
                    step = pending.pop(i)
                    turn = resume_at.get(i, 0)
                    running[asyncio.ensure_future(self._run_step(inp, step, turn))] = i
                if not running:
                    if self._handing_over:
                        raise HandOver
                    raise ApplicationError("plan has unreachable steps", non_retryable=True)
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f]):
                    index = running.pop(fut)
                    try:
                        result = fut.result()
                    except ActivityError as err:
                        raise StepFailed(index, failure_message(err)) from err
                    if result is not None:  # None: stopped for the hand-over, see _paused
                        self._done[index] = result
                workflow.set_current_details(f"{len(self._done)}/{len(steps)} steps done")
            if self._paused:
                raise HandOver
        except GeneratorExit:
            # The worker is evicting this run from its cache (shutdown, cache pressure): nothing
            # may be awaited now, and a replay elsewhere carries the task on.
            for fut in running:
                fut.cancel()
            raise
        except BaseException:
            await _stop(*running)
            raise

    def _hand_over_due(self, inp: TaskInput) -> bool:
        """Continue as new before history reaches the server's limits (Temporal says when) or
        the operator's event count. Both come with the activation, so replays decide alike."""
        if not self._handing_over:
            info = workflow.info()
            limit = inp.policy.continue_as_new_events
            self._handing_over = info.is_continue_as_new_suggested() or (
                limit > 0 and info.get_current_history_length() >= limit
            )
        return self._handing_over

    def _resume(self, inp: TaskInput, started_at: float) -> Resume:
        return Resume(
            steps=self._steps,
            done=[self._done[i] for i in sorted(self._done)],
            in_progress=[StepProgress(index=i, turn=t) for i, t in sorted(self._paused.items())],
            started_at=started_at,
            runs=(inp.resume.runs if inp.resume else 1) + 1,
        )

    async def _run_step(self, inp: TaskInput, step: PlannedStep, turn: int = 0) -> StepResult | None:
        """The tool-calling loop: one run_step activity per LLM turn; each requested tool
        call runs as its own activity; the conversation itself stays in Postgres. Returns None
        when it stopped for a hand-over (continue-as-new); the next run goes on at that turn."""
        p = inp.policy
        title = f": {step.title[:80]}" if inp.show_user_text else ""
        workflow.set_current_details(f"step {step.index} · {step.agent}{title}")
        first_turn = turn
        while True:
            # Every run makes progress: a step stops only after one turn in this run.
            if turn > first_turn and self._hand_over_due(inp):
                self._paused[step.index] = turn
                return None
            result = await workflow.execute_activity(
                RUN_STEP,
                StepInput(
                    task_id=inp.task_id, index=step.index, agent=step.agent,
                    depends_on=step.depends_on, turn=turn, max_turns=p.max_turns,
                    max_tool_calls=p.max_tool_calls_per_turn,
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
            heartbeat_timeout=tool_heartbeat_timeout(inp.policy),
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
