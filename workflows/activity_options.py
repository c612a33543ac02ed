"""Timeouts and retry policies of TaskWorkflow's activities.

The LLM and tool activities take theirs from the task's ExecutionPolicy, which is fixed when the
task starts, so a replay computes the same options; bookkeeping has fixed ones."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from durable_orchestrator.temporal.contracts import ExecutionPolicy, ToolCallRef

BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
FINISH_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60), maximum_attempts=10
)


def retry_policy(p: ExecutionPolicy, *, max_attempts: int | None = None) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=p.initial_interval_secs),
        backoff_coefficient=p.backoff,
        maximum_interval=timedelta(seconds=p.max_interval_secs),
        maximum_attempts=p.max_attempts if max_attempts is None else max_attempts,
    )


def step_timeout(p: ExecutionPolicy) -> timedelta:
    """start_to_close of one LLM activity (plan_task, one run_step turn)."""
    return timedelta(seconds=p.step_timeout_secs)


def plan_timeout(p: ExecutionPolicy) -> timedelta:
    """start_to_close of plan_task, which covers its two LLM calls and their rate-limit waits."""
    return timedelta(seconds=p.plan_timeout_secs or p.step_timeout_secs)


def heartbeat_timeout(p: ExecutionPolicy) -> timedelta:
    """A worker that dies mid-call is noticed within a quarter of the step timeout (≥ 5 s)."""
    return timedelta(seconds=max(5.0, p.step_timeout_secs / 4))


def tool_retry(p: ExecutionPolicy) -> RetryPolicy:
    return retry_policy(p, max_attempts=max(1, p.tool_max_attempts))


def tool_heartbeat_timeout(p: ExecutionPolicy) -> timedelta:
    """Without one a running tool never hears of a cancel: Temporal delivers cancellation to an
    activity only in answer to a heartbeat (activities/heartbeat.py beats while a tool runs)."""
    return timedelta(seconds=p.tool_heartbeat_secs)


def tool_timeout(call: ToolCallRef) -> timedelta:
    """run_tool enforces the tool's own timeout; the margin lets that readable error end the
    call rather than Temporal's start-to-close."""
    return timedelta(seconds=call.timeout_secs + 10)
