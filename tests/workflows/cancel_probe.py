"""Run TaskWorkflow on this interpreter against a Temporal server, with stand-in activities
registered under the real names, and report how a cancel during planning, a cancel during a
step and a deadline during planning end.

    python tests/workflows/cancel_probe.py 127.0.0.1:7233

Needs only temporalio (plus the repository on sys.path): tests/workflows/test_python_versions.py
runs it on every Python that `requires-python` admits, each in a small venv. Prints one JSON
object: {"python": ..., "cancel": {...}, "cancel_step": {...}, "deadline": {...}}.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

from durable_orchestrator.temporal.contracts import (
    FINISH_TASK,
    PLAN_TASK,
    RUN_STEP,
    RUN_TOOL,
    SEND_WEBHOOK,
    ExecutionPolicy,
    FinishInput,
    PlanInput,
    PlannedStep,
    PlanResult,
    StepInput,
    TaskInput,
)
from workflows.task_workflow import TaskWorkflow


class StandIns:
    """plan_task holds (heartbeating) until cancelled, or for a `step-` task plans one step,
    and run_step holds instead; finish_task records what it was told."""

    def __init__(self) -> None:
        self.planning: dict[str, asyncio.Event] = {}
        self.plan_cancelled: dict[str, asyncio.Event] = {}
        self.finished: dict[str, FinishInput] = {}

    def started(self, task_id: str) -> asyncio.Event:
        return self.planning.setdefault(task_id, asyncio.Event())

    def cancelled(self, task_id: str) -> asyncio.Event:
        return self.plan_cancelled.setdefault(task_id, asyncio.Event())

    async def _hold(self, task_id: str) -> None:
        self.started(task_id).set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            self.cancelled(task_id).set()
            raise

    @activity.defn(name=PLAN_TASK)
    async def plan_task(self, inp: PlanInput) -> PlanResult:
        if inp.task_id.startswith("step-"):
            return PlanResult(steps=[PlannedStep(index=0, agent="writer", title="hold")])
        await self._hold(inp.task_id)
        raise AssertionError("unreachable")

    @activity.defn(name=FINISH_TASK)
    async def finish_task(self, inp: FinishInput) -> str:
        self.finished[inp.task_id] = inp
        return ""

    @activity.defn(name=RUN_STEP)
    async def run_step(self, inp: StepInput) -> None:
        await self._hold(inp.task_id)

    @activity.defn(name=RUN_TOOL)
    async def run_tool(self, inp: object) -> None:
        raise AssertionError("no tool may run: planning never ends")

    @activity.defn(name=SEND_WEBHOOK)
    async def send_webhook(self, inp: object) -> None:
        return None


async def _cancelled(
    client: Client, queue: str, stand_ins: StandIns, task_id: str
) -> dict[str, object]:
    """Start a task, cancel it once the held activity runs, report how it ended."""
    handle = await client.start_workflow(
        TaskWorkflow.run,
        # A step timeout of 20 s gives the activities a 5 s heartbeat timeout: the cancel is
        # delivered on their next heartbeat.
        TaskInput(task_id=task_id, user_id="probe", policy=ExecutionPolicy(step_timeout_secs=20)),
        id=f"task-{task_id}",
        task_queue=queue,
        execution_timeout=timedelta(seconds=60),
    )
    await asyncio.wait_for(stand_ins.started(task_id).wait(), 30)
    await handle.cancel()
    outcome = await asyncio.wait_for(_outcome(stand_ins, handle, task_id), 30)
    # The cancel reached the running activity itself, not only the workflow.
    try:
        await asyncio.wait_for(stand_ins.cancelled(task_id).wait(), 20)
        outcome["activity_cancelled"] = True
    except TimeoutError:
        outcome["activity_cancelled"] = False
    return outcome


async def _deadline(
    client: Client, queue: str, stand_ins: StandIns, task_id: str
) -> dict[str, object]:
    """Start a task whose 1 s deadline passes while it plans, report how it ended."""
    handle = await client.start_workflow(
        TaskWorkflow.run,
        TaskInput(
            task_id=task_id,
            user_id="probe",
            policy=ExecutionPolicy(step_timeout_secs=20, deadline_secs=1),
        ),
        id=f"task-{task_id}",
        task_queue=queue,
        execution_timeout=timedelta(seconds=60),
    )
    return await asyncio.wait_for(_outcome(stand_ins, handle, task_id), 30)


async def _outcome(stand_ins: StandIns, handle, task_id: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    try:
        await handle.result()
        closed = "completed"
    except WorkflowFailureError as err:
        closed = "cancelled" if isinstance(err.cause, CancelledError) else f"failed: {err.cause}"
    finish = stand_ins.finished.get(task_id)
    return {
        "recorded": finish.status if finish else None,
        "error": finish.error if finish else None,
        "workflow": closed,
    }


async def main(address: str) -> dict[str, object]:
    client = await Client.connect(address)
    stand_ins = StandIns()
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[TaskWorkflow],
        activities=[
            stand_ins.plan_task,
            stand_ins.finish_task,
            stand_ins.run_step,
            stand_ins.run_tool,
            stand_ins.send_webhook,
        ],
    )
    report: dict[str, object] = {"python": platform.python_version()}
    async with worker:
        report["cancel"], report["cancel_step"], report["deadline"] = await asyncio.gather(
            _cancelled(client, queue, stand_ins, f"cancel-{uuid.uuid4().hex[:8]}"),
            _cancelled(client, queue, stand_ins, f"step-{uuid.uuid4().hex[:8]}"),
            _deadline(client, queue, stand_ins, f"deadline-{uuid.uuid4().hex[:8]}"),
        )
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
    # The SDK's Rust runtime threads can abort interpreter finalisation (PyGILState_Release);
    # the report is out, so leave without it.
    os._exit(0)
