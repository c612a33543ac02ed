"""Starting a task's workflow: the same call from the API (right after the task row commits)
and from the reconciler (for a row whose workflow never started)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import Priority, WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal import search_attributes
from durable_orchestrator.temporal.contracts import (
    TASK_WORKFLOW,
    ExecutionPolicy,
    TaskInput,
    workflow_id_for,
)

# Temporal priority keys: 1 is served first; 3 is what tasks without a priority get.
PRIORITY_KEYS = {"high": 1, "normal": 3, "low": 5}


def execution_policy(settings: Settings) -> ExecutionPolicy:
    return ExecutionPolicy(
        initial_interval_secs=settings.retry_initial_interval_secs,
        backoff=settings.retry_backoff,
        max_interval_secs=settings.retry_max_interval_secs,
        max_attempts=settings.retry_max_attempts,
        step_timeout_secs=settings.step_timeout_secs,
        deadline_secs=settings.task_deadline_secs,
        max_parallel_steps=settings.max_parallel_steps,
        max_turns=settings.max_turns,
        approval_timeout_secs=settings.approval_timeout_effective,
        tool_max_attempts=settings.tool_max_attempts,
        tool_heartbeat_secs=settings.tool_heartbeat_timeout_secs,
        max_tool_calls_per_turn=settings.max_tool_calls_per_turn,
        continue_as_new_events=settings.continue_as_new_events,
        plan_timeout_secs=plan_timeout_secs(settings),
    )


def plan_timeout_secs(settings: Settings) -> float:
    """plan_task makes up to two LLM calls (the plan and its repair); the margin covers the
    memory search and the writes. Waits for a breaker or rate capacity fit in what is left of
    the attempt (llm/waiting.py), so they need no room of their own."""
    return max(settings.step_timeout_secs, 2 * settings.llm_timeout_secs + 30.0)


async def start_task_workflow(
    client: Client,
    settings: Settings,
    *,
    task_id: str,
    user_id: str,
    description: str,
    webhook: bool = False,
    priority: str = "normal",
    bounded: bool = False,
) -> None:
    """Idempotent: a second start while the run exists attaches to it (USE_EXISTING), and a
    start after the run closed raises WorkflowAlreadyStartedError (REJECT_DUPLICATE) instead of
    running the task a second time; the reconciler then records how the first run ended."""
    await client.start_workflow(
        TASK_WORKFLOW,
        TaskInput(
            task_id=task_id,
            user_id=user_id,
            policy=execution_policy(settings),
            search_attributes=settings.search_attributes,
            webhook=webhook,
            show_user_text=settings.temporal_user_text,
            bounded=bounded,
        ),
        # Inherited by every activity of the task; the fairness key shares a busy queue between
        # users on servers with fairness enabled (others ignore it).
        priority=Priority(priority_key=PRIORITY_KEYS[priority], fairness_key=user_id),
        id=workflow_id_for(task_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        # Every Web UI user reads the summary: the user's text only when the operator opts in.
        static_summary=description[:200] if settings.temporal_user_text else f"task {task_id}",
        search_attributes=search_attributes.initial(user_id)
        if settings.search_attributes
        else None,
    )
