"""/tasks: submit, read. The API never waits on an LLM: it writes the row, starts the
workflow and returns."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Header, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from api.deps import EngineDep, SettingsDep, TemporalDep, request_id, require
from api.errors import ERROR_RESPONSES, APIError
from api.rate_limits import rate_limited
from api.schemas import TaskAccepted, TaskCreate, TaskList, TaskPublic, TaskStatus, TaskSummary
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import audit, task_list, task_view, tasks
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.llm.budget import effective_task_budget
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.temporal import search_attributes
from durable_orchestrator.temporal.contracts import (
    TASK_WORKFLOW,
    ExecutionPolicy,
    TaskInput,
    workflow_id_for,
)

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=ERROR_RESPONSES)
log = structlog.get_logger(__name__)

WriteUser = Annotated[Principal, require("tasks:write")]
ReadUser = Annotated[Principal, require("tasks:read")]


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
        approval_timeout_secs=settings.approval_timeout_secs,
        tool_max_attempts=settings.tool_max_attempts,
    )


def _request_hash(body: TaskCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


async def _start_workflow(
    request: Request, task_id: str, user_id: str, description: str, *, webhook: bool = False
) -> None:
    settings: Settings = request.app.state.settings
    await request.app.state.temporal.start_workflow(
        TASK_WORKFLOW,
        TaskInput(
            task_id=task_id, user_id=user_id, policy=execution_policy(settings),
            search_attributes=settings.search_attributes, webhook=webhook,
        ),
        id=workflow_id_for(task_id),
        task_queue=settings.task_queue,
        # A retried submission (same Idempotency-Key) after a crash between insert and start
        # attaches to the run that exists instead of starting a second one.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=description[:200],
        search_attributes=search_attributes.initial(user_id) if settings.search_attributes else None,
    )


def _accepted(request: Request, task_id: str, status_: str) -> TaskAccepted:
    return TaskAccepted(
        id=task_id,
        status=status_,  # type: ignore[arg-type]
        workflow_id=workflow_id_for(task_id),
        status_url=str(request.url_for("get_task", task_id=task_id)),
    )


def _check_webhook(url: str, settings: Settings) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    problem = None
    if parts.scheme not in ("http", "https") or not host:
        problem = "must be an absolute http(s) URL"
    elif host not in allowed:
        problem = f"host {host!r} is not in ORCH_WEBHOOK_ALLOWED_HOSTS"
    elif parts.username or parts.password:
        problem = "must not carry credentials"
    if problem:
        raise APIError(422, "validation_error", "invalid request: webhook_url",
                       [{"field": "webhook_url", "message": problem}])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=None,
    summary="Submit a task",
    description="Returns 202 with the accepted task. With `?wait=N` the call waits up to N "
    "seconds (at most ORCH_MAX_WAIT_SECS) and returns 200 with the finished task (as GET "
    "/tasks/{id}) when it ends in time. A repeated Idempotency-Key returns 200 with the "
    "original task's accepted body.",
    responses={
        200: {"model": TaskPublic | TaskAccepted,
              "description": "Finished within `wait`, or the same Idempotency-Key seen before"},
        202: {"model": TaskAccepted, "description": "Accepted; follow status_url or the events"},
    },
    dependencies=[rate_limited("task_submit", "rate_limit", per="key")],
)
async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    principal: WriteUser,
    engine: EngineDep,
    settings: SettingsDep,
    _temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    wait: Annotated[
        float | None,
        Query(ge=0, description="Seconds to wait for the task to finish (max ORCH_MAX_WAIT_SECS)."),
    ] = None,
) -> TaskAccepted | TaskPublic:
    _check_submission(body, principal, settings, wait)
    task_id = tasks.new_task_id()
    request_hash = _request_hash(body) if idempotency_key else None
    try:
        async with engine.begin() as conn:
            await tasks.insert_task(
                conn,
                task_id=task_id,
                user_id=principal.user_id,
                description=body.description,
                metadata=body.metadata,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                options=_task_options(body, settings),
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return await _replay(request, response, engine, principal, idempotency_key, request_hash)
    await _start_or_withdraw(request, engine, task_id, principal.user_id, body)
    metrics.TASKS_SUBMITTED.inc()
    if wait:
        finished = await _wait_for_end(engine, settings, task_id, principal.user_id, wait)
        if finished is not None:
            response.status_code = status.HTTP_200_OK
            return finished
    return _accepted(request, task_id, "pending")


def _check_submission(body: TaskCreate, principal: Principal, settings: Settings, wait: float | None) -> None:
    """What the request schema cannot check: limits from the settings, and the caller."""
    if wait is not None and wait > settings.max_wait_secs:
        raise APIError(422, "validation_error", "invalid request: wait",
                       [{"field": "wait", "message": f"at most {settings.max_wait_secs:g} seconds"}])
    if body.webhook_url is not None:
        _check_webhook(body.webhook_url, settings)
    if body.user_id is not None and body.user_id != principal.user_id:
        raise APIError(403, "forbidden", "user_id does not match the API key's user",
                       {"field": "user_id"})
    if len(body.description) > settings.max_description_chars:
        raise APIError(
            422, "validation_error",
            f"invalid request: description (at most {settings.max_description_chars} characters)",
            [{"field": "description", "message": f"longer than {settings.max_description_chars} characters"}],
        )


def _task_options(body: TaskCreate, settings: Settings) -> dict[str, Any]:
    return {
        "budget": effective_task_budget(body.budget.model_dump() if body.budget else None, settings),
        **({"webhook_url": body.webhook_url} if body.webhook_url else {}),
    }


async def _start_or_withdraw(
    request: Request, engine: AsyncEngine, task_id: str, user_id: str, body: TaskCreate
) -> None:
    try:
        await _start_workflow(request, task_id, user_id, body.description, webhook=body.webhook_url is not None)
    except Exception as exc:
        # Nothing half-written: without a workflow the row would sit in 'pending' forever.
        await tasks.delete_task(engine, task_id)
        log.error("workflow_start_failed", task_id=task_id, error=str(exc))
        raise APIError(503, "temporal_unavailable", "could not start the task; try again") from exc


async def _wait_for_end(
    engine, settings: Settings, task_id: str, user_id: str, wait: float  # type: ignore[no-untyped-def]
) -> TaskPublic | None:
    """Poll the task's status in Postgres (one indexed read per interval) until it is terminal
    or `wait` runs out. The LLM work stays in the worker; this only watches."""
    deadline = time.monotonic() + wait
    while True:
        if await tasks.task_status(engine, task_id, user_id) in TERMINAL:
            view = await task_view.get_task_view(engine, task_id, user_id)
            return TaskPublic.model_validate(view) if view else None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(settings.wait_poll_interval_secs, remaining))


async def _replay(request, response, engine, principal, key, request_hash):  # type: ignore[no-untyped-def]
    row = await tasks.find_submission(engine, principal.user_id, key)
    if row is None:  # lost a race with a delete; extremely unlikely
        raise APIError(409, "conflict", "idempotency key in use; retry")
    if row.request_hash != request_hash:
        raise APIError(409, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body")
    if row.status == "pending":
        await _start_workflow(request, row.id, principal.user_id, row.description,
                              webhook=bool(row.options.get("webhook_url")))
    response.status_code = status.HTTP_200_OK
    return _accepted(request, row.id, row.status)


@router.get("", response_model=TaskList, summary="List your tasks, newest first")
async def list_tasks(
    principal: ReadUser,
    engine: EngineDep,
    status_: Annotated[TaskStatus | None, Query(alias="status", description="Only tasks in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page.")] = None,
) -> TaskList:
    try:
        rows, next_cursor = await task_list.list_tasks(
            engine, principal.user_id, status=status_, limit=limit, cursor=cursor
        )
    except task_list.BadCursor as exc:
        raise APIError(422, "validation_error", "invalid request: cursor",
                       [{"field": "cursor", "message": str(exc)}]) from None
    return TaskList(items=[TaskSummary.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskPublic, summary="Get a task with its steps")
async def get_task(task_id: str, principal: ReadUser, engine: EngineDep) -> TaskPublic:
    view = await task_view.get_task_view(engine, task_id, principal.user_id)
    if view is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    return TaskPublic.model_validate(view)


# --- cancellation -----------------------------------------------------------------------------


@router.post(
    "/{task_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Cancel a task",
    description="Requests cancellation of the task's workflow (the same as `temporal workflow "
    "cancel -w task-<id>`). The running step's LLM call is interrupted through its heartbeat, "
    "no later step starts, and the status becomes `cancelled` within seconds. 409 if the task "
    "has already finished.",
)
async def cancel_task(
    task_id: str, request: Request, principal: WriteUser, engine: EngineDep, client: TemporalDep
) -> TaskAccepted:
    task_status = await tasks.task_status(engine, task_id, principal.user_id)
    if task_status is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    if task_status in TERMINAL:
        raise APIError(409, "task_finished", f"task {task_id} is already {task_status}")
    try:
        await client.get_workflow_handle(workflow_id_for(task_id)).cancel()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the run ended between our read and now
            raise APIError(409, "task_finished", f"task {task_id} has already finished") from exc
        raise APIError(503, "temporal_unavailable", "could not cancel the task; try again") from exc
    await audit.record(engine, principal.user_id, "task.cancel", "success", request_id(request),
                       {"task_id": task_id})
    log.info("task_cancel_requested", task_id=task_id)
    return _accepted(request, task_id, task_status)
