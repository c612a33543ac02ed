"""The reconciler: keeps task rows (Postgres) and task workflows (Temporal) in agreement.

Two sources of truth meet at a seam: the API commits a task row and then starts its workflow,
and a workflow records its end in the row from its own finish step. A crash between the two
halves, or a workflow that ends without its finish step (terminated, timed out, failed in
workflow code such as "plan has unreachable steps", a cancel arriving during the finish),
leaves them disagreeing. Every ORCH_RECONCILE_INTERVAL_SECS the reconciler looks at each
unfinished row of its task queue that has been unchanged for ORCH_RECONCILE_GRACE_SECS and
asks Temporal about its workflow:

- none, row pending: start it (idempotent: same workflow id, attaches if it started meanwhile);
- none, row running or waiting: the run existed and is gone (past retention): `failed`;
- closed: the row gets the close status (`completed`, `failed` with the failure or the
  termination reason, `cancelled`) and its terminal event, so SSE streams end;
- running: nothing.

It runs inside each worker (not as a Temporal Schedule): a pass is a handful of RPCs and one
query, and as a scheduled workflow it would add a workflow run to history and the Web UI every
few seconds. Workers of one queue take turns through an advisory lock, so N workers cost one
pass per interval. A row is only ever moved to a terminal status by the guarded update the
workflow's own finish step uses, so a late finish and the reconciler cannot both win."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from durable_orchestrator.data import reconciliation, tasks
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.temporal.contracts import workflow_id_for
from durable_orchestrator.temporal.task_start import start_task_workflow

log = structlog.get_logger(__name__)

# How many workflows one pass asks about at once.
_CONCURRENCY = 8


@dataclass
class PassReport:
    checked: int = 0
    started: list[str] = field(default_factory=list)
    closed: dict[str, str] = field(default_factory=dict)  # task id -> status given
    errors: dict[str, str] = field(
        default_factory=dict
    )  # task id -> what went wrong; next pass retries


@dataclass
class Reconciler:
    client: Client
    engine: AsyncEngine
    settings: Settings

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and the next one tries again."""
        while True:
            try:
                report = await self.reconcile_once()
                if report.started or report.closed:
                    log.info(
                        "tasks_reconciled",
                        checked=report.checked,
                        started=report.started,
                        closed=report.closed,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconcile_pass_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.settings.reconcile_interval_secs)

    async def reconcile_once(self) -> PassReport:
        report = PassReport()
        queue = self.settings.task_queue
        async with reconciliation.exclusive(self.engine, f"reconcile:{queue}") as mine:
            if not mine:
                return report
            gate = asyncio.Semaphore(_CONCURRENCY)

            async def check(row: reconciliation.UnfinishedTask) -> None:
                async with gate:
                    try:
                        await self._check(row, report)
                    except Exception as exc:  # one task's trouble must not stop the pass
                        report.errors[row.id] = str(exc) or type(exc).__name__
                        log.warning(
                            "reconcile_task_failed", task_id=row.id, error=report.errors[row.id]
                        )

            async with asyncio.TaskGroup() as group:
                async for row in reconciliation.quiet_unfinished_tasks(
                    self.engine,
                    queue,
                    quiet_secs=self.settings.reconcile_grace_secs,
                    page=self.settings.reconcile_batch,
                ):
                    report.checked += 1
                    group.create_task(check(row))
        return report

    async def _check(self, row: reconciliation.UnfinishedTask, report: PassReport) -> None:
        handle = self.client.get_workflow_handle(workflow_id_for(row.id))
        try:
            status = (await handle.describe()).status
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            await self._without_workflow(row, report)
            return
        closed = _close_status(status)  # None for a status this SDK does not know (paused)
        if closed is not None:
            await self._close(row, report, closed, await _close_reason(handle, status))

    async def _without_workflow(
        self, row: reconciliation.UnfinishedTask, report: PassReport
    ) -> None:
        if row.status == "pending":  # never started
            await self._start(row, report)
        else:  # it ran (the row says so) and is gone
            gone = "its workflow no longer exists (closed and past retention)"
            await self._close(row, report, "failed", gone)

    async def _start(self, row: reconciliation.UnfinishedTask, report: PassReport) -> None:
        try:
            await start_task_workflow(
                self.client,
                self.settings,
                task_id=row.id,
                user_id=row.user_id,
                description=row.description,
                webhook=row.webhook,
                priority=row.priority,
                bounded=row.bounded,
            )
        except WorkflowAlreadyStartedError:
            return  # it ran and closed since we looked: the next pass records how it ended
        report.started.append(row.id)
        metrics.TASKS_RECONCILED.labels("started").inc()

    async def _close(
        self, row: reconciliation.UnfinishedTask, report: PassReport, status: str, error: str | None
    ) -> None:
        await tasks.finish_task(
            self.engine, row.id, status, error=error,
            remember_chars=self.settings.remembered_result_chars,
        )
        report.closed[row.id] = status
        metrics.TASKS_RECONCILED.labels(f"closed_{status}").inc()
        log.warning("task_closed_by_reconciler", task_id=row.id, status=status, error=error)


def _close_status(status: WorkflowExecutionStatus | None) -> str | None:
    """The task status for a closed run; None while it runs (or continued as new, which the
    describe of the workflow id already follows)."""
    return {
        WorkflowExecutionStatus.COMPLETED: "completed",
        WorkflowExecutionStatus.FAILED: "failed",
        WorkflowExecutionStatus.TERMINATED: "failed",
        WorkflowExecutionStatus.TIMED_OUT: "failed",
        WorkflowExecutionStatus.CANCELED: "cancelled",
    }.get(status)  # type: ignore[arg-type]


async def _close_reason(handle: WorkflowHandle, status: WorkflowExecutionStatus) -> str | None:
    if status == WorkflowExecutionStatus.COMPLETED:
        return None
    if status == WorkflowExecutionStatus.CANCELED:
        return "cancelled by request"
    reason = ""
    async for ev in handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
    ):
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            reason = ev.workflow_execution_terminated_event_attributes.reason
        elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = ev.workflow_execution_failed_event_attributes.failure
            while failure.HasField("cause"):  # the innermost cause says what actually went wrong
                failure = failure.cause
            reason = failure.message
    if status == WorkflowExecutionStatus.TERMINATED:
        return f"terminated: {reason}" if reason else "terminated"
    if status == WorkflowExecutionStatus.TIMED_OUT:
        return "the workflow timed out"
    return reason or "the workflow failed"


def start_reconciler(
    client: Client, engine: AsyncEngine, settings: Settings
) -> asyncio.Task[None] | None:
    """The reconciler as a background task of the worker; None when the interval is 0."""
    if settings.reconcile_interval_secs <= 0:
        return None
    return asyncio.create_task(Reconciler(client, engine, settings).run(), name="reconciler")


async def stop_reconciler(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
