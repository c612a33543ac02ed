"""TaskWorkflow's decisions with fake activities registered under the real names, on the
time-skipping test server: the DAG order, failures, retries and approvals, in milliseconds and
without PostgreSQL, an LLM or the dev server (the `fast` tier)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from durable_orchestrator.temporal.contracts import (
    APPROVAL_UPDATE,
    FINISH_TASK,
    PLAN_TASK,
    RUN_STEP,
    RUN_TOOL,
    SEND_WEBHOOK,
    ApprovalDecision,
    ExecutionPolicy,
    FinishInput,
    PlanInput,
    PlannedStep,
    PlanResult,
    StepInput,
    StepResult,
    TaskInput,
    TaskOutcome,
    ToolCallRef,
    ToolInput,
    ToolResult,
    WebhookInput,
)
from workflows.task_workflow import TaskWorkflow


@dataclass
class FakeActivities:
    """Stand-ins for the activities, under their real names; they record what they were asked."""

    steps: list[PlannedStep]
    fail_step: int | None = None  # this step fails for good
    flaky_step: int | None = None  # this step fails once, then answers
    tool_call: ToolCallRef | None = None  # step 0 asks for this call on its first turn
    log: list[tuple[str, Any]] = field(default_factory=list)
    asked_for_approval: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name=PLAN_TASK)
    async def plan_task(self, inp: PlanInput) -> PlanResult:
        self.log.append(("plan", inp.task_id))
        return PlanResult(steps=self.steps)

    @activity.defn(name=RUN_STEP)
    async def run_step(self, inp: StepInput) -> StepResult:
        self.log.append(("step", (inp.index, inp.turn)))
        if inp.index == self.fail_step:
            raise ApplicationError("the model refused step", non_retryable=True)
        if inp.index == self.flaky_step and activity.info().attempt == 1:
            raise ApplicationError("HTTP 503 from the provider")
        if inp.index == 0 and inp.turn == 0 and self.tool_call is not None:
            if self.tool_call.approval_id:
                self.asked_for_approval.set()
            return StepResult(index=0, done=False, turn=0, tool_calls=[self.tool_call])
        self.log.append(("step done", inp.index))
        return StepResult(index=inp.index, done=True, preview=f"output {inp.index}")

    @activity.defn(name=RUN_TOOL)
    async def run_tool(self, inp: ToolInput) -> ToolResult:
        self.log.append(("tool", (inp.seq, inp.decision, inp.decided_by)))
        return ToolResult(
            seq=inp.seq, status="succeeded" if inp.decision != "timeout" else "rejected"
        )

    @activity.defn(name=FINISH_TASK)
    async def finish_task(self, inp: FinishInput) -> str:
        self.log.append(("finish", (inp.status, inp.failed_step, inp.error)))
        return f"preview of {inp.task_id}"

    @activity.defn(name=SEND_WEBHOOK)
    async def send_webhook(self, inp: WebhookInput) -> int:
        self.log.append(("webhook", inp.task_id))
        return 204

    def all(self) -> list[Any]:
        return [
            self.plan_task,
            self.run_step,
            self.run_tool,
            self.finish_task,
            self.send_webhook,
        ]

    def named(self, kind: str) -> list[Any]:
        return [value for name, value in self.log if name == kind]


POLICY = ExecutionPolicy(
    initial_interval_secs=1, max_attempts=3, approval_timeout_secs=1800, deadline_secs=7200
)


async def _run(env: WorkflowEnvironment, fakes: FakeActivities, *, webhook: bool = False):  # type: ignore[no-untyped-def]
    queue = f"fast-{uuid.uuid4().hex[:8]}"
    task_id = uuid.uuid4().hex
    async with Worker(
        env.client, task_queue=queue, workflows=[TaskWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            TaskWorkflow.run,
            TaskInput(task_id=task_id, user_id="u", policy=POLICY, webhook=webhook),
            id=f"task-{task_id}",
            task_queue=queue,
        )
        return task_id, await handle.result()


async def test_steps_run_in_dag_order_then_finish_and_webhook(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(
        steps=[
            PlannedStep(0, "researcher", "a"),
            PlannedStep(1, "researcher", "b"),
            PlannedStep(2, "analyst", "combine", depends_on=[0, 1]),
            PlannedStep(3, "writer", "write", depends_on=[2]),
        ]
    )
    task_id, outcome = await _run(time_skipping_env, fakes, webhook=True)
    assert outcome == TaskOutcome(
        task_id=task_id, status="completed", result_preview=f"preview of {task_id}"
    )
    order = [(name, value) for name, value in fakes.log if name in ("step", "step done")]
    started = {value[0]: i for i, (name, value) in enumerate(order) if name == "step"}
    finished = {value: i for i, (name, value) in enumerate(order) if name == "step done"}
    assert set(started) == set(finished) == {0, 1, 2, 3}
    assert started[2] > max(finished[0], finished[1]) and started[3] > finished[2]
    assert fakes.named("finish") == [("completed", None, None)]
    assert fakes.named("webhook") == [task_id]
    # Nothing after the webhook: the result reaches memory through finish_task's outbox row.
    assert [name for name, _ in fakes.log][-2:] == ["finish", "webhook"]


async def test_a_failed_step_fails_the_task_and_names_the_step(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(
        steps=[PlannedStep(0, "researcher", "a"), PlannedStep(1, "writer", "b", [0])], fail_step=1
    )
    with pytest.raises(WorkflowFailureError) as err:
        await _run(time_skipping_env, fakes)
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == "TaskFailed"
    assert fakes.named("finish") == [("failed", 1, "the model refused step")]
    assert fakes.named("step").count((1, 0)) == 1  # non-retryable: one attempt


async def test_a_retryable_failure_is_retried_by_temporal(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(steps=[PlannedStep(0, "writer", "a")], flaky_step=0)
    _, outcome = await _run(time_skipping_env, fakes)
    assert outcome.status == "completed"
    assert fakes.named("step") == [(0, 0), (0, 0)]
    assert fakes.named("finish") == [("completed", None, None)]


async def test_an_undecided_approval_times_out_as_rejected(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Half an hour of approval timeout passes at once on the time-skipping server."""
    call = ToolCallRef(seq=0, call_id="c1", tool="send_email", approval_id="ap-1")
    fakes = FakeActivities(steps=[PlannedStep(0, "writer", "a")], tool_call=call)
    _, outcome = await _run(time_skipping_env, fakes)
    assert outcome.status == "completed"
    assert fakes.named("tool") == [(0, "timeout", None)]
    assert fakes.named("step") == [(0, 0), (0, 1)]  # the step went on with the next turn


async def test_an_approval_sent_as_update_reaches_the_tool(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    call = ToolCallRef(seq=0, call_id="c1", tool="send_email", approval_id="ap-2")
    fakes = FakeActivities(steps=[PlannedStep(0, "writer", "a")], tool_call=call)
    queue, task_id = f"fast-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    async with Worker(
        env.client, task_queue=queue, workflows=[TaskWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            TaskWorkflow.run,
            TaskInput(task_id=task_id, user_id="u", policy=POLICY),
            id=f"task-{task_id}",
            task_queue=queue,
        )
        await asyncio.wait_for(fakes.asked_for_approval.wait(), 30)
        with pytest.raises(WorkflowUpdateFailedError):  # the validator: not approve/reject
            await handle.execute_update(APPROVAL_UPDATE, ApprovalDecision("ap-2", "maybe"))
        async with asyncio.timeout(30):
            while True:  # until the workflow has seen the step's answer and waits for the call
                try:
                    await handle.execute_update(
                        APPROVAL_UPDATE, ApprovalDecision("ap-2", "approve", "fine", "alice")
                    )
                    break
                except WorkflowUpdateFailedError as exc:
                    assert getattr(exc.cause, "type", None) == "ApprovalNotFound", exc.cause
                    await asyncio.sleep(0.05)
        with pytest.raises(WorkflowUpdateFailedError):  # decided already
            await handle.execute_update(APPROVAL_UPDATE, ApprovalDecision("ap-2", "reject"))
        outcome = await handle.result()
    assert outcome.status == "completed"
    assert fakes.named("tool") == [(0, "approve", "alice")]
